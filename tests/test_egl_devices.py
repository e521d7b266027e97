"""Render workers spread over GPUs with EGL: worker i renders on MUJOCO_EGL_DEVICE_ID = i % GPUs.

The GPU count comes from a probe of EGL's devices; this machine's EGL (Mesa) has no GPU, so
the probe must find none, and the spreading itself is checked in real worker processes with
the count set as the probe would export it on a machine with two GPUs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

from pipeline.envs.gl import EGL_DEVICE, egl_gpus, render_pool, use_egl_device
from pipeline.rl.env_backends import WorkerEnvs, env_vector


class DeviceReport:
    """An env whose observation is the EGL device its process was given (-1: none)."""

    def reset(self, seed: int | None = None) -> np.ndarray:
        return np.array([int(os.environ.get(EGL_DEVICE, -1)), os.getpid()])

    def close(self) -> None:
        pass


def device_report() -> Any:
    return DeviceReport()


def pool_device(_: int) -> tuple[int, str | None]:
    time.sleep(0.5)  # long enough that both workers take items
    return os.getpid(), os.environ.get(EGL_DEVICE)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after egl_gpus() found two GPU-backed EGL devices (the count it exports)."""
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setenv("RRL_EGL_GPUS", "2")
    monkeypatch.delenv(EGL_DEVICE, raising=False)


def test_sampler_workers_render_on_one_gpu_each(two_gpus: None) -> None:
    envs = WorkerEnvs(device_report, 4, workers=2, view=env_vector)
    try:
        seen = envs.reset([0, 1, 2, 3], [0, 1, 2, 3])
    finally:
        envs.close()
    # Slots go round-robin over the workers: 0 and 2 in worker 0, 1 and 3 in worker 1.
    assert [int(s[0]) for s in seen] == [0, 1, 0, 1]
    assert seen[0][1] == seen[2][1] != seen[1][1] == seen[3][1]


def test_render_pool_workers_render_on_one_gpu_each(two_gpus: None) -> None:
    with render_pool(2) as pool:
        seen = dict(pool.map(pool_device, range(6), chunksize=1))
    assert sorted(seen.values()) == ["0", "1"]


def test_a_device_the_user_chose_is_kept(two_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EGL_DEVICE, "1")
    assert egl_gpus() == 0  # nothing to spread: every worker inherits the user's device
    envs = WorkerEnvs(device_report, 2, workers=2, view=env_vector)
    try:
        assert [int(s[0]) for s in envs.reset([0, 1], [0, 1])] == [1, 1]
    finally:
        envs.close()


def test_one_gpu_or_another_backend_spreads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EGL_DEVICE, raising=False)
    use_egl_device(3, 1)
    assert EGL_DEVICE not in os.environ
    use_egl_device(3, 2)
    assert os.environ[EGL_DEVICE] == "1"
    # Not monkeypatch.delenv: it would record "1" and put it back after the test, sending every
    # later render in this session to an EGL device this machine may not have.
    del os.environ[EGL_DEVICE]
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setenv("RRL_EGL_GPUS", "2")
    assert egl_gpus() == 0


@pytest.mark.gl
def test_egl_without_gpu_devices_counts_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mesa's EGL devices are not GPUs: sending workers to device 1 would fail to render."""
    from pipeline.devices import cuda_device_count

    if cuda_device_count():
        pytest.skip("this machine has GPUs")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.delenv("RRL_EGL_GPUS", raising=False)
    monkeypatch.delenv(EGL_DEVICE, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert egl_gpus() == 0
    assert os.environ["RRL_EGL_GPUS"] == "0"  # exported: worker processes do not probe again
