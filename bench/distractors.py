"""Render cost of the distractor levels: frames/s per task and level, shadows and reflections off.

    python bench/distractors.py --size 256 --frames 60 [--sheet docs/distractors.png]

Each cell renders ``frames`` frames of the task's first RRL camera, one env step between frames
(the step is not timed), after one untimed frame that creates the GL context; the four levels
take turns frame by frame. The best of ``repeats`` runs is reported, since other processes share
the CPUs. ``--sheet`` also writes the
contact sheet of all four tasks (rows levels 0-3, columns seeds 0-2).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.envs.adroit import AdroitEnv  # before anything that could import torch (triton)
from pipeline.envs.distractor_sheet import write_distractor_sheet
from pipeline.envs.distractors import LEVELS, DistractorSpec
from pipeline.envs.tasks import TASK_SPECS


def frames_per_second(task: str, size: int, frames: int, repeats: int) -> list[float]:
    """Frames/s of each level; the levels take turns frame by frame so that load from other
    processes falls on all of them alike."""
    envs = [AdroitEnv(task, width=size, height=size, shadows=False,
                      distractors=DistractorSpec(level=level, seed=0)) for level in LEVELS]
    camera = envs[0].spec.rrl_cameras[0]
    for env in envs:
        env.reset(seed=0)
        env.render(camera)
    actions = np.random.default_rng(0).uniform(-1, 1, (frames, envs[0].spec.act_dim))
    best = [0.0] * len(envs)
    for _ in range(repeats):
        seconds = [0.0] * len(envs)
        for action in actions:
            for i, env in enumerate(envs):
                env.step(action)
                start = time.perf_counter()
                env.render(camera)
                seconds[i] += time.perf_counter() - start
        best = [max(b, frames / s) for b, s in zip(best, seconds, strict=True)]
    for env in envs:
        env.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sheet", default=None, help="also write the 4-task contact sheet here")
    parser.add_argument("--sheet-size", type=int, default=192)
    args = parser.parse_args()

    print(f"frames/s at {args.size}x{args.size}, shadows off, first RRL camera")
    print(f"{'task':<10}" + "".join(f"{'level ' + str(level):>10}" for level in LEVELS))
    for task in TASK_SPECS:
        rates = frames_per_second(task, args.size, args.frames, args.repeats)
        print(f"{task:<10}" + "".join(f"{rate:>10.1f}" for rate in rates))
    if args.sheet:
        path = write_distractor_sheet(list(TASK_SPECS), args.sheet, size=args.sheet_size)
        print(f"contact sheet: {path}")


if __name__ == "__main__":
    main()
