"""The configured device reaches the encoder; CUDA agrees with the CPU (gpu-marked tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.devices import resolve_device
from pipeline.errors import ConfigError


def test_auto_is_cpu_without_cuda_and_cuda_when_present() -> None:
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"


def test_missing_cuda_device_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")


def test_encoder_runs_on_the_device_it_was_given() -> None:
    from pipeline.encoders import create_encoder

    enc = create_encoder("resnet10t", weights="random", resize=64, crop=56, device="cpu")
    assert all(p.device.type == "cpu" for p in enc.module.parameters())
    assert enc.device.type == "cpu"


def _frames(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


@pytest.mark.gpu
def test_cuda_fp32_features_agree_with_cpu() -> None:
    from pipeline.encoders import create_encoder

    cpu = create_encoder("resnet18", weights="random", resize=64, crop=56, device="cpu")
    gpu = create_encoder("resnet18", weights="random", resize=64, crop=56, device="cuda")
    a, b = cpu.encode(_frames()).astype(np.float64), gpu.encode(_frames()).astype(np.float64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.9999
    assert np.allclose(a.astype(np.float16), b.astype(np.float16), rtol=2e-3, atol=2e-3)
