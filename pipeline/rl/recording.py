"""Write vision rollouts to an episode file like the demos, so they can be inspected or re-encoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.envs.replay import ReplayedEpisode
from pipeline.rl.sampler import Path as RolloutPath
from pipeline.store.episodes import EpisodeWriter


class RolloutRecorder:
    """``on_paths`` hook: every ``every`` iterations, write that batch to ``iter_<k>.hdf5``."""

    def __init__(self, folder: Path, task: str, every: int) -> None:
        self.folder, self.task, self.every = folder, task, every

    def __call__(self, iteration: int, paths: list[RolloutPath]) -> None:
        if iteration % self.every:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        cameras = tuple(paths[0]["frames"])
        writer = EpisodeWriter(self.folder / f"iter_{iteration:04d}.hdf5",
                               {"env_name": self.task, "type": "adroit", "source": "dapg rollouts"},
                               "", cameras)
        try:
            for i, p in enumerate(paths):
                writer.write(i, ReplayedEpisode(
                    index=i, frames=p["frames"], actions=p["actions"],  # type: ignore[arg-type]
                    rewards=p["rewards"], observations=p["state_obs"], states=p["states"],
                    proprio=np.asarray(p["proprio"], dtype=np.float32),
                    fidelity={"success_steps": int(np.sum(p["success"]))}))
        finally:
            writer.close()
