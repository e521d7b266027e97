"""The encode stage end to end on tiny renders: store layout, equality with a direct forward,
cache hits (local and pulled from S3), weights files, resume after a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from pipeline.config import PipelineConfig
from pipeline.outputs import result_store
from pipeline.runner import Runner, StageResult
from pipeline.store.episodes import EpisodeReader
from stages import STAGES
from tests.helpers import demo_config

pytestmark = pytest.mark.gl

TINY = {"env.width": "48", "env.height": "48", "env.cameras": "top,fixed",
        "render.workers": "1", "encode.encoder": "resnet10t", "encode.weights": "random",
        "encode.resize": "48", "encode.crop": "40", "encode.workers": "2", "encode.batch_size": "8"}


def config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    return demo_config(demos, TINY, **extra)


def run(cfg: PipelineConfig, data: Path, stage: str = "encode", **kw: Any) -> StageResult:
    return Runner(cfg, STAGES, data, log=lambda m: None).run(stage, **kw)


@pytest.fixture(scope="module")
def encoded(tiny_door_demos, tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("data")
    return data, run(config(tiny_door_demos), data)


def test_store_opens_with_plain_zarr_and_dask(encoded) -> None:  # type: ignore[no-untyped-def]
    data, result = encoded
    root, key = result_store(result), result.key
    group = zarr.open_group(root, path=key, mode="r")
    episodes = Runner(PipelineConfig(), STAGES, data).data_dir / "render"
    with EpisodeReader(next(episodes.glob("*/episodes.hdf5"))) as reader:
        rows, ends = reader.num_rows, reader.episode_ends
    for cam in ("top", "fixed"):
        arr = group[cam]
        assert arr.shape == (rows, 512) and arr.dtype == np.float16
        assert arr.chunks == (1024, 512)
        lazy = da.from_zarr(root, component=f"{key}/{cam}")
        assert lazy.shape == (rows, 512) and np.isfinite(lazy.compute()).all()
    np.testing.assert_array_equal(group["episode_ends"][:], ends)
    attrs = dict(group.attrs)
    assert attrs["key"] == key and attrs["complete"] is True and attrs["encoder"] == "resnet10t"
    assert attrs["weights"]["kind"] == "random"
    assert attrs["episodes_key"] == result.manifest["upstream"]["render"]


def test_features_equal_a_direct_forward_in_episode_order(encoded) -> None:  # type: ignore[no-untyped-def]
    from pipeline.encoders import create_encoder

    data, result = encoded
    episodes = result.manifest["upstream"]["render"][:12]
    with EpisodeReader(data / "render" / episodes / "episodes.hdf5") as reader:
        frames = reader.read_all("fixed")
    encoder = create_encoder("resnet10t", "random", resize=48, crop=40)
    direct = encoder.encode(frames)
    stored = zarr.open_group(result_store(result), path=result.key, mode="r")["fixed"][:]
    np.testing.assert_allclose(stored.astype(np.float32), direct, rtol=2e-3, atol=2e-3)


def test_second_run_is_a_cache_hit_and_describes_random_weights(tiny_door_demos, encoded) -> None:  # type: ignore[no-untyped-def]
    data, first = encoded
    again = run(config(tiny_door_demos), data)
    assert again.cache_hit and again.key == first.key
    text = STAGES["encode"].describe(again)
    assert "RANDOM" in text and first.key in text and "bytes per frame" in text


def test_pulled_store_is_a_cache_hit_without_rendering(tiny_door_demos, encoded, s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.store.copy import copy_group

    _, first = encoded
    url = "s3://rrl-test/shared-features"
    copy_group(result_store(first), url, first.key, dst_options=s3)  # a teammate pushes
    teammate = tmp_path / "teammate"
    copy_group(url, str(teammate / "features.zarr"), first.key, src_options=s3)  # we pull
    result = run(config(tiny_door_demos), teammate)
    assert result.cache_hit and result.key == first.key
    assert not (teammate / "render").exists()  # nothing was rendered or encoded here
    status = {s.name: s.state for s in Runner(config(tiny_door_demos), STAGES, teammate).status()}
    assert status["encode"] == "up to date" and status["render"] == "missing"


def test_weights_file_is_loaded_and_its_sha256_recorded(tiny_door_demos, encoded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.encoders import create_encoder

    data, random_run = encoded
    module = create_encoder("resnet10t", "random", resize=48, crop=40).module
    path = tmp_path / "resnet10t.pth"
    torch.save(module.state_dict(), path)
    result = run(config(tiny_door_demos, **{"encode.weights": str(path)}), data)
    assert result.key != random_run.key  # weights are part of the key
    weights = result.summary["weights"]
    assert weights["kind"] == "file" and len(weights["sha256"]) == 64
    same = zarr.open_group(result_store(result), path=result.key, mode="r")["top"][:]
    ref = zarr.open_group(result_store(random_run), path=random_run.key, mode="r")["top"][:]
    np.testing.assert_array_equal(same, ref)  # the file holds the very same weights


def test_crashed_encode_resumes_to_an_identical_store(tiny_door_demos, encoded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data, first = encoded
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    root = copy / "features.zarr" / first.key
    (copy / "encode" / first.key[:12] / "manifest.json").unlink()
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"]["complete"] = False  # as if killed before finalize ...
    meta.pop("consolidated_metadata", None)
    (root / "zarr.json").write_text(json.dumps(meta))
    (root / "_shard_sha256" / "fixed" / "c" / "0" / "0").unlink()  # ... with the fixed
    shutil.rmtree(root / "fixed" / "c", ignore_errors=True)  # camera's shard not yet written
    result = run(config(tiny_door_demos), copy)
    assert not result.cache_hit and result.summary["shards_written"] == 1
    for cam in ("top", "fixed"):
        a = zarr.open_group(str(copy / "features.zarr"), path=first.key, mode="r")[cam][:]
        b = zarr.open_group(result_store(first), path=first.key, mode="r")[cam][:]
        np.testing.assert_array_equal(a, b)
