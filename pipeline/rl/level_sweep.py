"""A policy's rollouts under distractor levels, every step rendered, written to one episode file.

Episode i of level L (file index ``level_position * episodes + i``) resets with ``seed + i`` in
the scene ``DistractorSpec(L, seed + i)`` (``pipeline.rl.distracted``): every episode of a level
is its own scene, and episode i starts from the same state at every level, so levels differ in
what is rendered only. Episodes are written as their wave of envs finishes; a re-run skips the
finished ones (``RolloutFile.completed``), so an interrupted run resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import bad_store

if TYPE_CHECKING:
    from pipeline.rl.policy import GaussianMLPPolicy
    from pipeline.rl.recording import RolloutFile
    from pipeline.rl.rollout_loop import LoopSampler


@dataclass(frozen=True)
class RolloutPlan:
    levels: tuple[int, ...]
    episodes: int  # per level
    seed: int  # episode i resets with seed + i
    horizon: int
    deterministic: bool = True

    @property
    def total(self) -> int:
        return len(self.levels) * self.episodes

    def index(self, level_position: int, episode: int) -> int:
        """Where episode `episode` of the level at `level_position` goes in the file."""
        return level_position * self.episodes + episode


def record_rollouts(plan: RolloutPlan, policy: GaussianMLPPolicy,
                    sampler_for: Callable[[int], LoopSampler], out: RolloutFile,
                    log: Callable[[str], None] = print) -> dict[int, dict[str, float]]:
    """Write the plan's unfinished episodes; returns what rendering them cost, per level.

    ``sampler_for(level)`` makes a recording sampler (frames, states, proprio) whose envs show
    ``level``'s scenes; ``seconds_envs`` is the time spent waiting for its envs (physics and
    rendering), ``seconds`` the level's wall time (with encoding, for vision policies).
    """
    done = out.completed()
    costs: dict[int, dict[str, float]] = {}
    for position, level in enumerate(plan.levels):
        left = [i for i in range(plan.episodes) if plan.index(position, i) not in done]
        if not left:
            continue
        started = time.perf_counter()
        sampler = sampler_for(level)
        try:
            frames = 0
            for start in range(0, len(left), sampler.envs.size):
                ids = left[start:start + sampler.envs.size]
                rollouts = sampler.sample_ids(policy, ids, plan.horizon, plan.seed, plan.deterministic)
                for episode, rollout in zip(ids, rollouts, strict=True):
                    out.write(plan.index(position, episode), rollout, level)
                    # reset + every step renders each camera; the last frame is not stored
                    frames += (len(rollout["actions"]) + 1) * len(rollout["frames"])
                log(f"[rollouts] level {level}: episodes {ids[0]}..{ids[-1]} of {plan.episodes} "
                    "written")
            envs_seconds = float(getattr(sampler.envs, "seconds", float("nan")))
        finally:
            sampler.close()
        seconds = time.perf_counter() - started
        costs[level] = {"episodes": len(left), "frames_rendered": frames,
                        "seconds": round(seconds, 2), "seconds_envs": round(envs_seconds, 2),
                        "frames_per_second": round(frames / envs_seconds, 1) if envs_seconds else 0.0}
    return costs


def level_results(path: Path, plan: RolloutPlan) -> dict[int, dict[str, Any]]:
    """Success rate (percent), mean return and per-episode values of each level, read back from
    the file (which also holds the episodes of earlier, interrupted runs). A file that does not
    hold exactly the plan's episodes is refused."""
    from pipeline.store.episodes import EpisodeReader

    with EpisodeReader(path) as reader:
        attrs = {int(name.split("_", 1)[1]): reader.attrs(k) for k, name in enumerate(reader.names)}
    if sorted(attrs) != list(range(plan.total)):
        raise bad_store(str(path), f"holds episodes {sorted(attrs)[:8]}... ({len(attrs)}), not the "
                        f"{plan.total} the rollouts plan asks for", "re-run with FORCE=1")
    out: dict[int, dict[str, Any]] = {}
    for position, level in enumerate(plan.levels):
        rows = [attrs[plan.index(position, i)] for i in range(plan.episodes)]
        if any(r["distractor_level"] != level for r in rows):
            raise bad_store(str(path), f"episodes of level {level} were recorded at another level",
                            "re-run with FORCE=1")
        returns = [float(r["return"]) for r in rows]
        success = [bool(r["success"]) for r in rows]
        out[level] = {"success_rate": 100.0 * sum(success) / len(rows),
                      "mean_return": float(np.mean(returns)), "episodes": len(rows),
                      "per_episode_success": success, "per_episode_return": returns,
                      "seeds": [int(r["seed"]) for r in rows]}
    return out
