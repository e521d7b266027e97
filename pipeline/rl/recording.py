"""Recorded rollouts to episode files like the demos, so they can be inspected or encoded.

The one place rollouts become episode files: the rollouts stage (one resumable file, episode by
episode) and DAPG's ``record_every`` (one file per recorded iteration) both write through
``RolloutFile``. Per-episode attrs: success (hand_dapg's rule), success_steps, return, seed (of
the reset and the action noise) and distractor_level; the file's ``info`` says which policy made
the rollouts and how.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.envs.families import family
from pipeline.rl.rollouts import Rollout, episode_return, episode_success
from pipeline.store.episodes import Episode, EpisodeWriter
from pipeline.store.frames import FrameCodec


def rollout_episode(rollout: Rollout, task: str, distractor_level: int = 0) -> Episode:
    """A recorded rollout (``recorded_arrays`` fields) as the episode file stores it."""
    frames: dict[str, np.ndarray] = dict(rollout["frames"])
    return Episode(frames=frames, actions=rollout["actions"], rewards=rollout["rewards"],
                   states=rollout["states"], proprio=np.asarray(rollout["proprio"], dtype=np.float32),
                   observations=rollout["state_obs"],
                   attrs={"success": episode_success(rollout, task),
                          "success_steps": int(np.sum(rollout["success"])),
                          "return": episode_return(rollout), "seed": int(rollout["seed"]),
                          "distractor_level": int(distractor_level)})


class RolloutFile:
    """An episode file of rollouts, written one episode at a time.

    Opening an existing file keeps its finished episodes (``completed``), so an interrupted
    writer resumes where it stopped; ``source_sha256`` names the policy checkpoint.
    """

    def __init__(self, path: Path, task: str, cameras: tuple[str, ...], info: Mapping[str, Any],
                 env_kwargs: Mapping[str, Any] | None = None, source_sha256: str = "",
                 log: Callable[[str], None] | None = None, codec: FrameCodec | None = None) -> None:
        self.task = task
        env_args = {"env_name": task, "type": family(task), "env_kwargs": dict(env_kwargs or {})}
        self.writer = EpisodeWriter(path, env_args, source_sha256, cameras, info=info, log=log,
                                    codec=codec)

    def completed(self) -> set[int]:
        return self.writer.completed()

    def write(self, index: int, rollout: Rollout, distractor_level: int = 0) -> None:
        self.writer.write(index, rollout_episode(rollout, self.task, distractor_level))

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> RolloutFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_rollouts(path: Path, task: str, rollouts: Sequence[Rollout], info: Mapping[str, Any],
                   codec: FrameCodec | None = None) -> Path:
    """One episode file of `rollouts`; `info` (the policy, how it was sampled) goes in its attrs."""
    cameras = tuple(rollouts[0]["frames"]) if rollouts else ()
    with RolloutFile(path, task, cameras, info, codec=codec) as out:
        for i, rollout in enumerate(rollouts):
            out.write(i, rollout)
    return path


class RolloutRecorder:
    """``on_rollouts`` hook: every ``every`` iterations, write that batch to ``iter_<k>.hdf5``."""

    def __init__(self, folder: Path, task: str, every: int, info: Mapping[str, Any],
                 codec: FrameCodec | None = None) -> None:
        self.folder, self.task, self.every, self.info = folder, task, every, dict(info)
        self.codec = codec

    def __call__(self, iteration: int, rollouts: list[Rollout]) -> None:
        if iteration % self.every:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        info = {**self.info, "iteration": iteration, "deterministic": False,
                "horizon": len(rollouts[0]["actions"]) if rollouts else 0}
        write_rollouts(self.folder / f"iter_{iteration:04d}.hdf5", self.task, rollouts, info,
                       self.codec)


def rollouts_info(policy: Mapping[str, Any], obs_mode: str, levels: Sequence[int], **more: Any) -> dict[str, Any]:
    """The file attrs every rollout file carries: which policy (stage and key, or a checkpoint's
    sha256), what it observed, and the distractor levels of its episodes."""
    return {"source": "rollouts", "policy": dict(policy), "obs_mode": obs_mode,
            "distractor_levels": [int(level) for level in levels], **more}
