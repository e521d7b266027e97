"""RAD's replay memory, held in RAM as whole episodes of single frames, and its random crops.

RAD's ``utils.ReplayBuffer`` stores every transition's stacked observation and next observation
(2 x 9 x 100 x 100 bytes = 180 KB per transition, 18 GB at its capacity of 100,000). An episode's
frames are each a part of up to six such stacks, so here each frame is stored once and the stacks
are cut out when a batch is drawn: an episode of T steps holds T + 1 frames (3 x S x S bytes each)
plus its actions and rewards. DMControl-100k on cartpole (12,500 steps at 100 px, 100 episodes)
is 12,600 frames, 378 MB; on finger-spin or walker-walk (action repeat 2) 50,100 frames, 1.5 GB.
The first frame of an episode stands in for the frames before it, as RAD's ``FrameStack`` fills
its deque with the first observation at reset.

Sampling follows RAD's ``sample_rad`` with ``data_augs=crop`` (``data_augs.random_crop``): uniform
transition indices, then an independent random crop of each observation and each next
observation, the same window for every frame of a stack. DeepMind Control episodes end only at
the time limit, where RAD bootstraps (its done flag is 0 there), so no done flag is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class Episode:
    frames: Array  # uint8 (T + 1, 3, S, S): the frame before each step, then the last one
    actions: Array  # float32 (T, A)
    rewards: Array  # float32 (T,)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.actions.nbytes + self.rewards.nbytes


def stack_frames(frames: Array, index: int, k: int) -> Array:
    """Frames ``index - k + 1 .. index`` of one episode (channel-first), the first frame standing
    in for those before it, concatenated along the channels, oldest first: (3k, S, S)."""
    picks = [max(0, index - d) for d in range(k - 1, -1, -1)]
    return np.concatenate([frames[i] for i in picks], axis=0)


def center_crop(stacks: Array, crop: int) -> Array:
    """(..., C, S, S) -> (..., C, crop, crop), the window RAD acts and evaluates on."""
    side = stacks.shape[-1]
    top = (side - crop) // 2
    return stacks[..., top:top + crop, top:top + crop]


@dataclass(frozen=True)
class Batch:
    obs: Array  # uint8 (B, 3k, crop, crop)
    actions: Array  # float32 (B, A)
    rewards: Array  # float32 (B, 1)
    next_obs: Array  # uint8 (B, 3k, crop, crop)


class EpisodeReplay:
    """Finished and running episodes; the oldest finished ones are dropped beyond ``capacity``
    transitions."""

    def __init__(self, capacity: int, frame_stack: int) -> None:
        self.capacity, self.k = capacity, frame_stack
        self.episodes: list[Episode] = []

    def add(self, episode: Episode) -> None:
        self.episodes.append(episode)
        while len(self.episodes) > 1 and self.transitions > self.capacity:
            self.episodes.pop(0)

    @property
    def transitions(self) -> int:
        return sum(len(e) for e in self.episodes)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.episodes)

    def sample(self, rng: np.random.Generator, batch_size: int, crop: int,
               running: Episode | None = None) -> Batch:
        """A batch of transitions, each uniformly from the memory and from ``running`` (the
        episode being played, whose steps so far count as transitions too)."""
        episodes = self.episodes + ([running] if running is not None and len(running) else [])
        ends = np.cumsum([len(e) for e in episodes])
        if not len(ends) or ends[-1] == 0:
            raise ValueError("the replay memory is empty: nothing to sample")
        picks = rng.integers(0, ends[-1], size=batch_size)
        which = np.searchsorted(ends, picks, side="right")
        steps = picks - np.concatenate([[0], ends[:-1]])[which]
        pairs = list(zip(which.tolist(), steps.tolist(), strict=True))
        obs = np.stack([stack_frames(episodes[e].frames, t, self.k) for e, t in pairs])
        nxt = np.stack([stack_frames(episodes[e].frames, t + 1, self.k) for e, t in pairs])
        actions = np.stack([episodes[e].actions[t] for e, t in pairs])
        rewards = np.array([[episodes[e].rewards[t]] for e, t in pairs], np.float32)
        return Batch(random_crop(obs, crop, rng), actions.astype(np.float32), rewards,
                     random_crop(nxt, crop, rng))


def random_crop(stacks: Array, crop: int, rng: np.random.Generator) -> Array:
    """Each (C, S, S) stack cut to a ``crop`` window at a uniform offset in 0 .. S - crop."""
    n, channels, side, _ = stacks.shape
    offsets = rng.integers(0, side - crop + 1, size=(n, 2))
    out = np.empty((n, channels, crop, crop), dtype=stacks.dtype)
    for i, (top, left) in enumerate(offsets):
        out[i] = stacks[i, :, top:top + crop, left:left + crop]
    return out
