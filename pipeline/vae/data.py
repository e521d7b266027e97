"""The VAE's training data: every frame of an episode file at the VAE's input size, split into
training and held-out frames by whole episodes (neighbouring frames of one episode are nearly
identical, so a split by frame would measure memory, not generalisation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.encoders.preprocess import resize_crop
from pipeline.errors import invalid_value
from pipeline.store.episodes import EpisodeReader


@dataclass(frozen=True)
class Frames:
    """uint8 (N, 3, S, S) frames of every camera, with the episode and step each row shows."""

    pixels: torch.Tensor
    episode: np.ndarray  # (N,) index of the episode in the file
    step: np.ndarray  # (N,) step within the episode
    cameras: tuple[str, ...]
    episodes: int  # episodes in the file

    def subset(self, rows: np.ndarray) -> Frames:
        index = torch.from_numpy(rows)
        return Frames(self.pixels[index], self.episode[rows], self.step[rows], self.cameras,
                      self.episodes)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def previous_rows(self) -> np.ndarray:
        """Each row's previous step in its episode and camera (at step 0, the row itself). Rows
        run episode by episode, step by step (`load_frames`; subsets keep whole episodes)."""
        rows = np.arange(len(self))
        previous = np.where(self.step > 0, rows - 1, rows)
        ok = (self.episode[previous] == self.episode) & (self.step[previous] == np.maximum(self.step - 1, 0))
        if not ok.all():
            raise invalid_value("VAE frames", "rows out of episode order",
                                "whole episodes, each in step order (load_frames, split_frames)")
        return previous


def load_frames(episodes_file: Path, size: int) -> Frames:
    """Each camera's frames, episode by episode, resized and cropped to ``size`` square."""
    pixels, episode, step = [], [], []
    with EpisodeReader(episodes_file) as reader:
        starts = reader.episode_ends - reader.lengths
        for camera in reader.cameras:
            for i, (lo, hi) in enumerate(zip(starts, reader.episode_ends, strict=True)):
                frames = torch.from_numpy(reader.read_rows(camera, int(lo), int(hi)))
                pixels.append(resize_crop(frames, size, size).contiguous())
                episode.append(np.full(hi - lo, i))
                step.append(np.arange(hi - lo))
        cameras, count = tuple(reader.cameras), len(reader.lengths)
    if not pixels:
        raise invalid_value("episode file", str(episodes_file), "one or more rendered episodes")
    return Frames(torch.cat(pixels), np.concatenate(episode), np.concatenate(step), cameras, count)


def split_episodes(count: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) episode indices: a seeded draw of ``holdout`` of the episodes, at
    least one on each side."""
    if count < 2:
        raise invalid_value("episodes for the VAE", count, "at least 2 (one to train on, one held "
                            "out); Fix: render more demos (MAX_DEMOS=)")
    held = min(count - 1, max(1, round(holdout * count)))
    order = np.random.default_rng([seed, 0]).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def split_frames(frames: Frames, holdout: float, seed: int) -> tuple[Frames, Frames, np.ndarray]:
    """(training frames, held-out frames, held-out episode indices)."""
    _, held_eps = split_episodes(frames.episodes, holdout, seed)
    held = np.isin(frames.episode, held_eps)
    return frames.subset(np.flatnonzero(~held)), frames.subset(np.flatnonzero(held)), held_eps
