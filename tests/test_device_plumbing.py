"""The configured device reaches the encoders where they run: the encode stage's dask workers
and the vision sampler; GPU clusters give each worker one GPU. CUDA runs are gpu-marked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.config import PipelineConfig, PolicyConfig
from pipeline.errors import ConfigError
from pipeline.runner import Runner, StageResult
from stages import STAGES
from tests.helpers import demo_config

TINY = {"env.width": "48", "env.height": "48", "env.cameras": "top",
        "render.workers": "1", "encode.encoder": "resnet10t", "encode.weights": "random",
        "encode.resize": "48", "encode.crop": "40", "encode.workers": "1", "encode.batch_size": "8"}
MISSING_GPU = f"cuda:{torch.cuda.device_count() + 3}"


def _config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    return demo_config(demos, TINY, **extra)


def _encode(cfg: PipelineConfig, data: Path, force: bool = False) -> StageResult:
    return Runner(cfg, STAGES, data, log=lambda m: None).run("encode", force=force)


@pytest.fixture(scope="module")
def cpu_encode(tiny_door_demos, tmp_path_factory) -> tuple[Path, StageResult]:  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("data")
    return data, _encode(_config(tiny_door_demos, **{"encode.device": "cpu"}), data)


def _source(data: Path, result: StageResult) -> Any:
    from pipeline.rl.data import DataSource

    return DataSource("door", "vision+proprio", store=str(data / "features.zarr"),
                      feature_key=result.key, cameras=("top",),
                      render={"width": 48, "height": 48, "shadows": False})


def _visible_gpus(*_: object) -> str | None:
    # A function of this module runs in the worker and reads its environment (os.environ.get
    # would travel with the caller's os.environ).
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_gpu_cluster_gives_each_worker_one_gpu_and_a_gpu_resource() -> None:
    """Without CUDA too: the workers' environment and resources are what a GPU machine gets."""
    from pipeline.distributed import get_client

    with get_client(gpus=(0, 3)) as client:
        seen = client.run(_visible_gpus)
        resources = [w["resources"] for w in client.scheduler_info()["workers"].values()]
        ran = client.gather([client.submit(_visible_gpus, i, pure=False, resources={"GPU": 1})
                             for i in range(4)])
        cluster = client.cluster
    assert sorted(seen.values()) == ["0", "3"]
    assert resources == [{"GPU": 1}, {"GPU": 1}]
    assert set(ran) <= {"0", "3"}
    assert cluster.status.name == "closed"  # closing the client shut its cluster down


def test_placement_follows_the_device_setting() -> None:
    from pipeline.encoders.encode_job import placement

    cpu = placement("cpu", 3, remote=False)
    assert (cpu.device, cpu.gpus, cpu.workers, cpu.worker_device, cpu.resources) == \
        ("cpu", (), 3, "cpu", None)
    auto = placement("auto", 2, remote=False)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert auto.gpus == tuple(range(gpus)) and auto.workers == (gpus or 2)
    assert auto.resources == ({"GPU": 1} if gpus else None)
    with pytest.raises(ConfigError, match=rf"encode.device: invalid device='{MISSING_GPU}'.*Fix:"):
        placement(MISSING_GPU, 2, remote=False)


@pytest.mark.gl
def test_encode_records_the_device_its_workers_encoded_on(cpu_encode) -> None:  # type: ignore[no-untyped-def]
    """``workers`` is read back from the encoders built inside the dask workers."""
    _, result = cpu_encode
    assert result.summary["device"] == {"device": "cpu", "gpus": [], "workers": ["cpu"]}


@pytest.mark.gl
def test_a_missing_gpu_stops_encode_before_any_work(tiny_door_demos, cpu_encode) -> None:  # type: ignore[no-untyped-def]
    """FORCE would delete the finished group first thing: it is still there, untouched."""
    from pipeline.store.features import is_complete

    data, result = cpu_encode
    cfg = _config(tiny_door_demos, **{"encode.device": MISSING_GPU})
    with pytest.raises(ConfigError, match=rf"encode.device: .*'{MISSING_GPU}'.*Fix:"):
        _encode(cfg, data, force=True)
    assert is_complete(str(data / "features.zarr"), result.key)


@pytest.mark.gl
def test_vision_sampler_encodes_on_dapg_device(cpu_encode) -> None:  # type: ignore[no-untyped-def]
    from pipeline.rl.data import make_sampler

    data, result = cpu_encode
    src = _source(data, result)
    sampler = make_sampler(src, PolicyConfig(), "dense", 2, "cpu")
    try:
        assert sampler.encoded.encoder.device.type == "cpu"  # type: ignore[attr-defined]
        # On the CPU the layout gives each phase every core in turn (vision_layout).
        assert sampler.device == "cpu" and not sampler.pipelined  # type: ignore[attr-defined]
    finally:
        sampler.close()
    with pytest.raises(ConfigError, match=rf"encode.device: .*'{MISSING_GPU}'.*Fix:"):
        make_sampler(src, PolicyConfig(), "dense", 2, MISSING_GPU)


@pytest.mark.gpu
@pytest.mark.gl
def test_cuda_encode_stage_agrees_with_the_cpu_one(tiny_door_demos, cpu_encode, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.store.features import open_features

    cpu_data, cpu = cpu_encode
    cuda = _encode(_config(tiny_door_demos, **{"encode.device": "cuda"}), tmp_path)
    assert cuda.key == cpu.key  # the device is not part of the key
    assert cuda.summary["device"]["workers"] == ["cuda:0"]
    a = open_features(str(cpu_data / "features.zarr"), cpu.key).read("top").astype(np.float64)
    b = open_features(str(tmp_path / "features.zarr"), cuda.key).read("top").astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.9999


@pytest.mark.gpu
@pytest.mark.gl
def test_vision_sampler_encodes_on_cuda(cpu_encode) -> None:  # type: ignore[no-untyped-def]
    from pipeline.rl.data import make_sampler
    from pipeline.rl.policy import GaussianMLPPolicy

    data, result = cpu_encode
    sampler = make_sampler(_source(data, result), PolicyConfig(), "dense", 2, "cuda")
    try:
        encoder = sampler.encoded.encoder  # type: ignore[attr-defined]
        assert encoder.device.type == "cuda"
        policy = GaussianMLPPolicy(encoder.feature_dim + 24, 28, hidden=(16,), seed=0)
        rollouts = sampler.sample(policy, 2, 3, seed=0)
    finally:
        sampler.close()
    assert [r["observations"].shape for r in rollouts] == [(3, encoder.feature_dim + 24)] * 2
