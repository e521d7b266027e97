"""Inputs of encoders that see several consecutive frames at once (RAD's frame stack of 3).

Such an encoder's input row for step t of an episode is frames t-k+1 .. t of that episode,
concatenated along the channels, oldest first: (H, W, 3k). Before the episode's first frame
there is nothing, so that frame stands in for the missing ones, as RAD's ``FrameStack`` fills
its deque with the first observation at reset. The same rows are built in the two places that
feed an encoder: from an episode file (``stacked_rows``, the encode stage) and from envs as they
step (``FrameStackView``, the vision samplers), so stored and live features agree.

numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Array = np.ndarray


def stack_indices(rows: Array, episode_starts: Array, k: int) -> Array:
    """(len(rows), k) frame indices: row r's k frames, clipped at its episode's first frame."""
    back = np.arange(k - 1, -1, -1)
    return np.maximum(episode_starts[:, None], rows[:, None] - back[None, :])


def stack_channels(frames: Array) -> Array:
    """(N, k, H, W, 3) -> (N, H, W, 3k), frame-major: [oldest RGB, ..., newest RGB]."""
    n, k, h, w, c = frames.shape
    return np.ascontiguousarray(np.moveaxis(frames, 1, 3)).reshape(n, h, w, k * c)


def stacked_rows(read_rows: Callable[[int, int], Array], start: int, stop: int,
                 episode_ends: Array, k: int) -> Array:
    """Stacked inputs of rows ``start .. stop-1`` of an episode file whose episodes end (cumulative
    row counts) at ``episode_ends``; ``read_rows(a, b)`` reads frames a .. b-1, (n, H, W, 3)."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    rows = np.arange(start, stop, dtype=np.int64)
    first = starts[np.searchsorted(ends, rows, side="right")]
    idx = stack_indices(rows, first, k)
    low = int(idx.min()) if len(idx) else start
    frames = read_rows(low, stop)
    return stack_channels(frames[idx - low])


class FrameStackView:
    """An env view (``pipeline.rl.env_backends``) that adds ``stacked``: per camera, the env's
    last ``k`` frames as one (H, W, 3k) input. It keeps the frames on the env object (one per
    env, in whichever process the env lives) and starts over whenever the env is at step 0."""

    def __init__(self, k: int, base: Callable[[Any, Array], dict[str, Any]]) -> None:
        self.k, self.base = k, base

    def __call__(self, env: Any, obs: Array) -> dict[str, Any]:
        view = self.base(env, obs)
        history: dict[str, list[Array]] | None = getattr(env, "_frame_stack", None)
        if env.t == 0 or history is None:
            history = {c: [f] * self.k for c, f in view["frames"].items()}
        else:
            history = {c: [*history[c][1:], f] for c, f in view["frames"].items()}
        env._frame_stack = history
        return {**view, "stacked": {c: np.concatenate(fs, axis=-1) for c, fs in history.items()}}


def encoder_frames(view: dict[str, Any], camera: str) -> Array:
    """The encoder input of one camera in an env view: its stack where the view has one."""
    return view["stacked"][camera] if "stacked" in view else view["frames"][camera]
