"""encode: every rendered frame through a frozen encoder into the Zarr feature store (dask).

The frames are the render stage's demos, or with ``SOURCE=rollouts`` the rollouts stage's
episodes (under their own key). ``SOURCE=auto`` (the default) is the demos where the task has
them and the rollouts stage's episodes where it has none (DeepMind Control: random-policy
rollouts, ``pipeline.envs.families``); the key holds the resolved source.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.encoders.layers import feature_choice
from pipeline.encoders.registry import resolve_input
from pipeline.envs.families import check_task_config, encode_source
from pipeline.errors import ConfigError, StoreError, WeightsError
from pipeline.outputs import DEFAULT_STORE, episodes_stage, result_store, store_root
from pipeline.runner import Stage, StageContext, StageResult, package_versions

# 2: low_dim arrays (proprio, actions, rewards) beside the features
# 3: per-shard sha256 records (_shard_sha256/<camera>) replace the done flags (_shards_done), and
#    array_sha256 attrs cover episode_ends and low_dim; groups are verified before they count
VERSION = "3"
BF16_MIN_COSINE = 0.999  # below this, bf16 features are not a stand-in for fp32 ones
AGREEMENT_SAMPLE = 32
ROWS_PER_TASK = 256  # small enough to keep every worker busy on a single shard
FINISH_ATTEMPTS = 3  # rounds of write + verify: a concurrent writer of the key can spoil one
def upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    return (episodes_stage(cfg),)


def episodes_upstream(ctx: StageContext) -> StageResult:
    """The upstream output whose episode file this encode reads (render or rollouts)."""
    return ctx.upstream[episodes_stage(ctx.config)]


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    from pipeline.encoders import encoder_spec, weights_identity

    e = cfg.encode
    check_task_config(cfg)
    encoder_spec(e.encoder)  # unknown names fail here, with the close matches
    # The encoder's own input (timm's data config; a VAE file stores its own) unless set.
    spec = encoder_spec(e.encoder, e.weights)
    return {
        "encoder": e.encoder,
        "weights": weights_identity(e.encoder, e.weights, e.weights_sha256),
        "precision": e.precision,
        # Resolved ("auto" is what it stands for); the demos leave it out: old keys stay valid.
        **({"source": source} if (source := encode_source(cfg)) != "demos" else {}),
        # resize, crop, normalize; interpolation, crop mode, mean/std where not RRL's
        "preprocessing": resolve_input(spec, e.resize, e.crop, e.interpolation).key(),
        **feature_choice(spec.library, e.layers, e.pool),  # only when encode.layers is set
        **({"weights_prefix": e.weights_prefix} if e.weights_prefix else {}),
    }


def check_done(ctx: StageContext, thorough: bool) -> str | None:
    """On a cache hit: None if the configured store holds the complete, undamaged group.

    ``thorough`` (before a run uses the group) reads every shard and checks it against its
    recorded sha256; `status` only lists the store for lost shard and record files.
    """
    from pipeline.store.features import DAMAGED_FIX, is_complete
    from pipeline.store.verify import listing_problems, verify_group

    root = store_root(ctx.config, ctx.data_dir)
    if not is_complete(root, ctx.key):
        return (f"{root} does not hold the complete group {ctx.key[:12]} (e.g. STORE= changed); "
                "the next run copies or redoes it")
    try:
        problems = verify_group(root, ctx.key).problems if thorough else \
            listing_problems(root, ctx.key)
    except StoreError as exc:
        problems = [str(exc)]
    if not problems:
        return None
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    return (f"the group {ctx.key[:12]} in {root} is damaged: {'; '.join(problems[:3])}{more}. "
            f"Fix: {DAMAGED_FIX}")


def adopt(ctx: StageContext) -> dict[str, Any] | None:
    """A complete group for this key in the store (pulled, a shared bucket), verified; else the
    local default store's copy, copied (and verified) into a configured remote store."""
    from pipeline.store.copy import copy_group
    from pipeline.store.features import FORCE_FIX, is_complete, open_features
    from pipeline.store.inspect import summary
    from pipeline.store.verify import verify_group

    root, local = store_root(ctx.config, ctx.data_dir), str(ctx.data_dir / DEFAULT_STORE)
    if is_complete(root, ctx.key):
        report = verify_group(root, ctx.key).raise_if_bad(FORCE_FIX)
    elif root != local and is_complete(local, ctx.key):
        ctx.log(f"[encode] copying {ctx.key[:12]} from {local} to {root}")
        report = copy_group(local, root, ctx.key, progress=False)
    else:
        return None
    return {**_portable(summary(open_features(root, ctx.key))), "store": ctx.config.encode.store,
            "verified": report.as_dict()}


def _checked_inputs(ctx: StageContext) -> dict[str, Any]:
    # A weights file replaced after the runner computed the key would put one file's features
    # under the other's key; the key is cheap to recompute, so check it still holds.

    now = inputs(ctx.config)
    if not ctx.key_still_holds(now):
        raise WeightsError(f"encode inputs changed while the stage started (weights file "
                           f"{ctx.config.encode.weights!r} replaced?). Fix: leave the weights "
                           "file in place while encoding and run encode again")
    return now


def run(ctx: StageContext) -> dict[str, Any]:
    from pipeline.distributed import get_client
    from pipeline.encoders.encode_job import (
        EncoderParams,
        ShardEncoder,
        cached_encoder,
        encoder_devices,
        placement,
        precision_agreement,
        sample_frames,
        threads_per_worker,
    )
    from pipeline.store.episodes import EpisodeReader
    from pipeline.store.features import FeatureStoreSpec, open_features
    from pipeline.store.inspect import summary
    from pipeline.store.shards import write_shards_distributed
    from pipeline.store.writer import delete_group, finalize

    e, root = ctx.config.encode, store_root(ctx.config, ctx.data_dir)
    place = placement(e.device, e.workers, remote=bool(e.scheduler))  # before any work
    checked = _checked_inputs(ctx)
    identity, size = checked["weights"], checked["preprocessing"]
    render = episodes_upstream(ctx)  # older manifests hold an absolute path: the join keeps it
    episodes = str(render.out_dir / render.summary["episodes_file"])
    with EpisodeReader(episodes) as reader:
        cameras, num_rows, ends = tuple(reader.cameras), reader.num_rows, reader.episode_ends
        low_dim = {"proprio": reader.read_all("obs/proprio"), "actions": reader.read_all("actions"),
                   "rewards": reader.read_all("rewards")}
    params = EncoderParams(e.encoder, e.weights, e.precision, size["resize"], size["crop"],
                           identity.get("sha256"), place.device, e.interpolation, e.layers,
                           e.pool, e.weights_prefix)
    encoder = cached_encoder(params)  # fails early (bad weights) before any cluster starts
    weights = dict(encoder.weights)
    if weights["kind"] == "file":  # kept by content in the store, so others rebuild the encoder
        weights.update(keep_weights_file(root, Path(e.weights), weights["sha256"]))
    attrs: dict[str, Any] = {
        "encoder": e.encoder, "weights": weights, "precision": e.precision,
        "preprocessing": encoder.preprocessing, "episodes_key": render.key,
        "episodes_stage": render.name,
        **({"layers": list(e.layers), "pool": e.pool} if e.layers else {}),
        **({"weights_prefix": e.weights_prefix} if e.weights_prefix else {}),
        "versions": package_versions(),
    }
    if e.precision != "fp32":
        cosine = precision_agreement(params, sample_frames(episodes, cameras[0], AGREEMENT_SAMPLE,
                                                           encoder.frame_stack))
        attrs["fp32_agreement_min_cosine"] = cosine
        ctx.log(f"[encode] {e.precision} vs fp32 on {AGREEMENT_SAMPLE} frames: min cosine {cosine:.6f}")
        if cosine < BF16_MIN_COSINE:
            raise ConfigError(f"encode.precision={e.precision} gives features with cosine {cosine:.5f} "
                              f"to fp32 (< {BF16_MIN_COSINE}). Fix: use PRECISION=fp32")
    if ctx.force and delete_group(root, ctx.key):
        # FORCE must really recompute: a complete (or foreign, or damaged) group would otherwise
        # short-circuit the work.
        ctx.log(f"[encode] FORCE: deleted the group {ctx.key[:12]} in {root}")
    spec = FeatureStoreSpec(ctx.key, cameras, encoder.feature_dim, num_rows, ends, attrs, low_dim,
                            features=encoder.features if e.layers else None)
    started = time.perf_counter()
    written = 0
    with get_client(e.scheduler, place.workers, gpus=place.gpus) as client:
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            for camera in cameras:
                job = ShardEncoder(episodes, camera, replace(params, device=place.worker_device),
                                   e.batch_size, threads_per_worker(place.workers))
                written += write_shards_distributed(client, root, spec, camera, job,
                                                    rows_per_task=ROWS_PER_TASK,
                                                    resources=place.resources)
            try:
                report = finalize(root, ctx.key)
                break
            except StoreError as exc:
                # Another writer of this key in a shared store can leave a shard and its record
                # from different runs; the next round recomputes exactly those shards.
                if attempt == FINISH_ATTEMPTS:
                    raise
                ctx.log(f"[encode] the group did not verify ({exc}); recomputing the shards that "
                        f"fail (round {attempt + 1} of {FINISH_ATTEMPTS})")
        device = place.summary(client.run(encoder_devices))
    seconds = time.perf_counter() - started
    store = open_features(root, ctx.key)
    ctx.log(f"[encode] wrote {written} shards in {seconds:.1f} s; verified "
            f"{report.shards_verified} of {report.shards_total} shards")
    for camera, count in report.zero_rows.items():
        ctx.log(f"[encode] warning: camera {camera!r} has {count} all-zero feature rows "
                f"(episodes {report.zero_row_episodes.get(camera, [])[:10]})")
    return {**_portable(summary(store)), "store": e.store, "encode_seconds": round(seconds, 2),
            "frames_per_second": round(num_rows * len(cameras) / seconds, 1),
            "shards_written": written, "verified": report.as_dict(), "device": device}


def keep_weights_file(root: str, path: Path, sha256: str) -> dict[str, Any]:
    """Put the weights file into the store's weights folder (before any shard is written, so a
    complete group always has it); the attrs that name it: its file name and size, no path."""
    from pipeline.store.weights_files import put_weights

    put_weights(root, path, sha256)
    return {"file": path.name, "bytes": path.stat().st_size}


def _portable(summary: dict[str, Any]) -> dict[str, Any]:
    # Where the group is follows from the store and the key (`result_store`); a path in the
    # manifest would go stale when the data folder moves.
    return {k: v for k, v in summary.items() if k != "location"}


def describe(result: StageResult) -> str:
    from pipeline.store.inspect import format_summary
    from pipeline.store.remote import location

    return format_summary({**result.summary,
                           "location": location(result_store(result), result.key)})


STAGE = Stage(
    name="encode",
    version=VERSION,
    upstream=upstream,
    inputs=inputs,
    run=run,
    describe=describe,
    adopt=adopt,
    check_done=check_done,
)
