"""Write recorded rollouts to an episode file like the demos, so they can be inspected or re-encoded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.rl.rollouts import Rollout, episode_return, episode_success
from pipeline.store.episodes import Episode, EpisodeWriter


def rollout_episode(rollout: Rollout, task: str) -> Episode:
    """A recorded rollout (``VisionSampler(record=True)``) as the episode file stores it."""
    frames: dict[str, np.ndarray] = dict(rollout["frames"])
    return Episode(frames=frames, actions=rollout["actions"], rewards=rollout["rewards"],
                   states=rollout["states"], proprio=np.asarray(rollout["proprio"], dtype=np.float32),
                   observations=rollout["state_obs"],
                   attrs={"success": episode_success(rollout, task),
                          "success_steps": int(np.sum(rollout["success"])),
                          "return": episode_return(rollout), "seed": int(rollout["seed"])})


def write_rollouts(path: Path, task: str, rollouts: Sequence[Rollout], info: Mapping[str, Any]) -> Path:
    """One episode file of `rollouts`; `info` (the policy, how it was sampled) goes in its attrs."""
    cameras = tuple(rollouts[0]["frames"]) if rollouts else ()
    writer = EpisodeWriter(path, {"env_name": task, "type": "adroit"}, "", cameras, info=info)
    try:
        for i, rollout in enumerate(rollouts):
            writer.write(i, rollout_episode(rollout, task))
    finally:
        writer.close()
    return path


class RolloutRecorder:
    """``on_rollouts`` hook: every ``every`` iterations, write that batch to ``iter_<k>.hdf5``."""

    def __init__(self, folder: Path, task: str, every: int, info: Mapping[str, Any]) -> None:
        self.folder, self.task, self.every, self.info = folder, task, every, dict(info)

    def __call__(self, iteration: int, rollouts: list[Rollout]) -> None:
        if iteration % self.every:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        info = {**self.info, "iteration": iteration, "deterministic": False,
                "horizon": len(rollouts[0]["actions"]) if rollouts else 0}
        write_rollouts(self.folder / f"iter_{iteration:04d}.hdf5", self.task, rollouts, info)
