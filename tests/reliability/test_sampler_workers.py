"""A sampler worker that fails or dies surfaces as a clear error in the parent, never a hang."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.rl.env_backends import WorkerEnvs, env_vector
from pipeline.rl.workers import WorkerError


def refusing_env() -> Any:
    raise ConfigError("invalid thing=1: expected 2")


def broken_env() -> Any:
    raise ValueError("the env cannot be built")


class SlowEnv:
    def reset(self, seed: int | None = None) -> np.ndarray:
        time.sleep(30)
        return np.zeros(3)

    def close(self) -> None:
        pass


def slow_env() -> Any:
    return SlowEnv()


def test_pipeline_error_in_a_worker_is_raised_as_itself() -> None:
    envs = WorkerEnvs(refusing_env, 2, workers=2, view=env_vector)
    try:
        with pytest.raises(ConfigError, match="invalid thing=1"):
            envs.reset([0, 1], [0, 1])
    finally:
        envs.close()


def test_other_worker_errors_name_the_worker_and_the_cause() -> None:
    envs = WorkerEnvs(broken_env, 1, workers=1, view=env_vector)
    try:
        with pytest.raises(WorkerError, match="ValueError: the env cannot be built"):
            envs.reset([0], [0])
    finally:
        envs.close()


def test_a_killed_worker_is_reported_with_its_signal() -> None:
    envs = WorkerEnvs(slow_env, 1, workers=1, view=env_vector)
    try:
        envs.workers.conns[0].send(("reset", [0], [0]))
        time.sleep(1.0)
        os.kill(envs.workers.procs[0].pid, signal.SIGKILL)
        started = time.perf_counter()
        with pytest.raises(WorkerError, match=r"died without a reply \(exit code -9\)"):
            envs.workers.recv(0)
        assert time.perf_counter() - started < 10
    finally:
        envs.close()
