"""Small pieces several test modules need: tiny stage sizes, killing a process group, replaying a
rollout's frames."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import PipelineConfig

# Learning and vision settings small enough for the default suite.
TINY_RL = {"dapg.iterations": "2", "dapg.trajectories": "4", "env.horizon": "20",
           "dapg.eval_episodes": "2", "dapg.envs": "4", "evaluate.episodes": "4",
           "evaluate.video_episodes": "1"}
TINY_VISION = {"env.width": "48", "env.height": "48", "render.workers": "1",
               "encode.encoder": "resnet10t", "encode.weights": "random", "encode.resize": "48",
               "encode.crop": "40", "encode.workers": "1"}


def demo_config(demos: tuple[Path, str], *presets: dict[str, str], **extra: str) -> PipelineConfig:
    """The default config on the given demos file (path, sha256), then ``presets`` (dicts of
    dotted overrides, later ones win), then ``extra`` overrides."""
    path, sha = demos
    values = {"demos.path": str(path), "demos.sha256": sha}
    for preset in presets:
        values.update(preset)
    return PipelineConfig().with_overrides({**values, **extra})


def tiny_config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    """The default config on the given demos file, at `TINY_RL` sizes, with ``extra`` overrides."""
    return demo_config(demos, TINY_RL, **extra)


def kill_group(proc: subprocess.Popen[Any], what: str) -> None:
    """kill -9 a process group and wait until none of it is left to write anything."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"{what} processes survived kill -9"
        time.sleep(0.05)


def replayed_door_frames(actions: np.ndarray, seed: int, size: int = 48) -> np.ndarray:
    """The top camera's frames of a door episode reset with ``seed`` and stepped by ``actions``
    (all but the last, whose result is never observed)."""
    from pipeline.envs.adroit import AdroitEnv

    env = AdroitEnv("door", horizon=10**9, cameras=("top",), width=size, height=size)
    env.reset(seed=seed)
    frames = [env.render("top")]
    for action in actions[:-1]:
        env.step(action)
        frames.append(env.render("top"))
    env.close()
    return np.stack(frames)
