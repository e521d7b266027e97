"""probe: ridge regression from the cached features to the simulator state (pipeline/encoders/probe.py).

A ranking of encoders in seconds, before any policy is trained: how well each target (door: hinge,
latch, handle, palm) is read linearly off the features of held-out demos, beside the state
ceiling. Upstream is the encode stage's episode source (render, or rollouts with SOURCE=rollouts) as
well as encode: the targets come from that episode file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.encoders.probe import run_probe, targets_for
from pipeline.errors import ConfigError, bad_store
from pipeline.fileio import write_json_atomic
from pipeline.manifests import read_manifest
from pipeline.outputs import episodes_stage, store_root, weights_label
from pipeline.runner import MANIFEST, Stage, StageContext, StageResult
from pipeline.settings import key_dict

VERSION = "1"
RESULT = "probe.json"


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    # Rollouts at several distractor levels replay each seed once per level: their held-out split
    # is by trajectory (reset seed) since that was found leaking; rendered demos' split is as it was.
    by_seed = {"split": "by_trajectory"} if episodes_stage(cfg) == "rollouts" else {}
    return {"task": cfg.task, "probe": key_dict(cfg.probe),
            "targets": {t.name: list(t.dims) for t in targets_for(cfg.task)}, **by_seed}


def run(ctx: StageContext) -> dict[str, Any]:
    from pipeline.distributed import get_client

    cfg = ctx.config.probe
    episodes = ctx.upstream[episodes_stage(ctx.config)].file("episodes_file")
    # In a worker process, whose BLAS uses probe.threads threads: on the 2 shared cores of the
    # machine this was built on, OpenBLAS's default of one thread per core made the probe 7x
    # slower under load (512-d: 10 s instead of 1.5 s; 2048-d: 135 s instead of 32 s).
    with get_client(workers=1, threads_per_worker=cfg.threads) as client:
        result = client.submit(run_probe, store_root(ctx.config, ctx.data_dir), ctx.upstream["encode"].key,
                               str(episodes), ctx.config.task, cfg).result()
    _refuse_demos_the_encoder_trained_on(ctx.config, result["test_demos"])
    summary = {"task": ctx.config.task, **result,
               "random_weights": result["weights"].get("kind") == "random",
               "feature_key": ctx.upstream["encode"].key, "include_proprio": cfg.include_proprio,
               "file": RESULT}
    write_json_atomic(ctx.out_dir / RESULT, summary)
    ctx.log(f"[probe] {summary['rows']} rows x {summary['input_dim']}-d: loaded in "
            f"{summary['load_seconds']} s, probed in {summary['probe_seconds']} s")
    return summary





def _refuse_demos_the_encoder_trained_on(cfg: PipelineConfig, test_demos: list[int]) -> None:
    """A VAE trained on some of the probe's held-out demos would score them as seen frames."""
    manifest = Path(cfg.encode.weights).parent / MANIFEST
    if cfg.encode.encoder != "vae" or episodes_stage(cfg) != "render" or not manifest.is_file():
        return
    done = read_manifest(manifest)
    if done is None:
        raise bad_store(str(manifest), "the VAE's manifest cannot be read or names another key, "
                        "so which demos it was trained on is unknown", "re-run the vae stage "
                        "with FORCE=1 (same settings), or pass another WEIGHTS=")
    vae = done["summary"]
    held = vae.get("heldout_episodes")
    seen = sorted(set(test_demos) - set(held)) if held is not None else []
    if seen:
        raise ConfigError(
            f"probe: held-out demos {seen} are among the frames the VAE ({manifest.parent}) was "
            f"trained on (it held out {held}), so their R^2 would not be held out. Fix: set "
            "probe.seed to the VAE's vae.seed and probe.test_fraction at most its vae.holdout "
            "(the two splits then agree)")


def _r2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def describe(result: StageResult) -> str:
    s = result.summary
    inputs = "+".join(s["cameras"]) + (" + proprio" if s["include_proprio"] else "")
    if s["constant_dims"]:
        inputs += f"; {s['constant_dims']} constant on every row, left out"
    lines = [
        f"linear probe ({s['task']}): {s['encoder']} ({s['precision']}), {weights_label(s['weights'])}",
        f"  {s['input_dim']}-d inputs ({inputs}), {s['rows']} rows of {s['demos']} demos; R^2 on "
        f"{len(s['test_demos'])} held-out demos ({s['test_rows']} rows), alpha by "
        f"{len(s['folds'])}-fold group CV on the rest",
        f"  {'target':<13}{'dims':>5}{'R^2':>9}{'alpha':>9}{'ceiling':>10}",
    ]
    for t in s["targets"]:
        name, f, c = t["name"], t["features"], t["state_ceiling"]
        edge = "*" if f["alpha_at_edge"] else " "
        lines.append(f"  {name:<13}{len(t['dims']):>5}{_r2(f['r2']):>9}{f['alpha']:>8.0e}{edge}"
                     f"{_r2(c['r2']):>10}")
    lines.append("  ceiling: the same probe from the state observation minus the target's dims")
    if any(t["features"]["alpha_at_edge"] for t in s["targets"]):
        lines.append("  * alpha at the end of the grid (probe.alphas): widen it to be sure")
    lines.append(f"  {result.out_dir / s['file']}")
    return "\n".join(lines)


def upstream(cfg: PipelineConfig) -> tuple[str, ...]:
    """The episode file the features were made from (render or rollouts), and the features."""
    return (episodes_stage(cfg), "encode")


STAGE = Stage(
    name="probe",
    version=VERSION,
    upstream=upstream,
    inputs=inputs,
    run=run,
    describe=describe,
)
