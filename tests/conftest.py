"""Shared fixtures: the door demos from ../shared (skip when absent) and tiny synthetic demos."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import moto_server

SHARED_DOOR_DEMOS = Path(__file__).resolve().parents[1].parent / "shared/data/adroit-demos/door-v0_demos.pickle"


_EGL_DEVICE_AT_START = os.environ.get("MUJOCO_EGL_DEVICE_ID")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """After all of a test's fixtures (monkeypatch's undo included): no MUJOCO_EGL_DEVICE_ID left.

    A leaked device id breaks every later render on a machine with one EGL device.
    """
    yield
    now = os.environ.get("MUJOCO_EGL_DEVICE_ID")
    if now != _EGL_DEVICE_AT_START:
        os.environ.pop("MUJOCO_EGL_DEVICE_ID", None)
        if _EGL_DEVICE_AT_START is not None:
            os.environ["MUJOCO_EGL_DEVICE_ID"] = _EGL_DEVICE_AT_START
        raise AssertionError(f"{item.nodeid} left MUJOCO_EGL_DEVICE_ID={now!r}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep downloads and hash caches of tests out of the user's ~/.cache."""
    monkeypatch.setenv("RRL_CACHE", str(tmp_path_factory.getbasetemp() / "rrl-cache"))


@pytest.fixture(scope="session")
def door_demos_path() -> Path:
    if not SHARED_DOOR_DEMOS.is_file():
        pytest.skip(f"door demos not found at {SHARED_DOOR_DEMOS}")
    return SHARED_DOOR_DEMOS


def write_demo_pickle(path: Path, demos: list[dict]) -> str:
    data = pickle.dumps(demos, protocol=2)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def synthetic_door_demos(n: int = 2, steps: int = 12, seed: int = 0) -> list[dict]:
    """Demos in the hand_dapg format, recorded from our own door env with random actions."""
    from pipeline.envs.adroit import AdroitEnv

    env = AdroitEnv("door", seed=seed)
    rng = np.random.default_rng(seed)
    demos = []
    for _ in range(n):
        env.reset()
        init = env.get_state()
        obs, acts, rews = [], [], []
        for _ in range(steps):
            obs.append(env.observation())
            a = rng.uniform(-1, 1, env.spec.act_dim)
            _, r, _, _ = env.step(a)
            acts.append(a)
            rews.append(r)
        demos.append({"observations": np.array(obs), "actions": np.array(acts),
                      "rewards": np.array(rews), "init_state_dict": init})
    env.close()
    return demos


@pytest.fixture(scope="session")
def tiny_door_demos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(path, sha256) of a 2-demo, 12-step door file made with the real simulator."""
    path = tmp_path_factory.mktemp("demos") / "door-v0_demos.pickle"
    sha = write_demo_pickle(path, synthetic_door_demos())
    return path, sha


@pytest.fixture(scope="session")
def s3() -> Iterator[dict[str, Any]]:
    """Storage options of a bucket ``rrl-test`` on a moto_server started for this module."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("moto.server") is None:
        pytest.skip("moto[server] is not installed")
    with moto_server() as (proc, options):
        if proc is None:
            pytest.skip("moto_server could not start")
        yield options


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests skip without CUDA and `network` tests without RRL_NETWORK=1, so that
    `make test-all` runs everything that can run on the machine at hand."""
    import torch

    no_cuda = pytest.mark.skip(reason="needs a CUDA device")
    no_net = pytest.mark.skip(reason="needs internet access (set RRL_NETWORK=1)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)
        if "network" in item.keywords and os.environ.get("RRL_NETWORK") != "1":
            item.add_marker(no_net)
