"""Videos of policy rollouts: replay an episode's actions from its seeded reset and render it.

Physics is deterministic, so replaying the recorded actions from the same seeded reset gives the
same trajectory; rendering happens in a child process, away from the process running torch.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from pipeline.envs.distractors import DistractorSpec
from pipeline.procs import exit_with_parent
from pipeline.rl.env_backends import task_env


def _render_episode(task: str, seed: int, actions: np.ndarray, camera: str, size: int,
                    distractors: int) -> np.ndarray:
    scene = DistractorSpec(distractors, seed) if distractors else None  # as pipeline.rl.distracted
    env = task_env(task, cameras=(camera,), width=size, height=size, distractors=scene)
    env.reset(seed=seed)
    frames = [env.render(camera)]
    for action in actions:
        env.step(action)
        frames.append(env.render(camera))
    env.close()
    return np.stack(frames)


def write_video(task: str, episodes: list[tuple[int, np.ndarray]], camera: str, path: Path,
                size: int = 192, fps: int = 25, distractors: int = 0) -> Path:
    """One GIF of the given (reset seed, actions) episodes, one after the other, each in its
    scene at distractor level `distractors`."""
    import imageio.v3 as iio

    ctx = mp.get_context("spawn")
    with ctx.Pool(1, exit_with_parent, (os.getpid(),)) as pool:
        clips = pool.starmap(_render_episode, [(task, s, a, camera, size, distractors)
                                               for s, a in episodes])
    frames = np.concatenate(clips)[::2]  # every other step keeps the file small
    iio.imwrite(path, frames, duration=1000 * 2 / fps, loop=0)
    return path
