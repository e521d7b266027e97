"""The work of the encode stage: frames from the episode file -> frozen encoder -> feature rows.

``ShardEncoder`` is what runs on dask workers. It is a small picklable description; the model
itself is built once per worker process and cached here, never shipped with a task.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.store.episodes import EpisodeReader

if TYPE_CHECKING:
    from pipeline.encoders.frozen import FrozenEncoder

_ENCODERS: dict[tuple[Any, ...], FrozenEncoder] = {}
_READERS: dict[str, EpisodeReader] = {}


@dataclass(frozen=True)
class EncoderParams:
    encoder: str
    weights: str
    precision: str
    resize: int
    crop: int

    def build(self) -> FrozenEncoder:
        from pipeline.encoders import create_encoder

        return create_encoder(self.encoder, weights=self.weights, precision=self.precision,
                              resize=self.resize, crop=self.crop)


def cached_encoder(params: EncoderParams, threads: int | None = None) -> FrozenEncoder:
    """The encoder for ``params``, built on first use in this process."""
    key = tuple(asdict(params).values())
    if key not in _ENCODERS:
        import torch

        if threads:
            torch.set_num_threads(threads)
        _ENCODERS[key] = params.build()
    return _ENCODERS[key]


def _reader(path: str) -> EpisodeReader:
    if path not in _READERS:
        _READERS[path] = EpisodeReader(path)
    return _READERS[path]


@dataclass(frozen=True)
class ShardEncoder:
    """Encode rows ``[start, stop)`` of one camera; called on a dask worker."""

    episodes_path: str
    camera: str
    params: EncoderParams
    batch_size: int
    threads: int

    def __call__(self, start: int, stop: int) -> np.ndarray:
        encoder = cached_encoder(self.params, self.threads)
        reader = _reader(self.episodes_path)
        out = [
            encoder.encode(reader.read_rows(self.camera, s, min(stop, s + self.batch_size)))
            for s in range(start, stop, self.batch_size)
        ]
        return np.concatenate(out).astype(np.float16)


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def precision_agreement(params: EncoderParams, frames: np.ndarray) -> float:
    """Smallest cosine similarity between this precision's features and fp32's on ``frames``."""
    reference = EncoderParams(params.encoder, params.weights, "fp32", params.resize, params.crop)
    a = cached_encoder(reference).encode(frames).astype(np.float64)
    b = cached_encoder(params).encode(frames).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.min())


def sample_frames(episodes_path: str, camera: str, count: int) -> np.ndarray:
    """``count`` frames spread evenly over the episode file."""
    reader = _reader(episodes_path)
    rows = np.linspace(0, reader.num_rows - 1, min(count, reader.num_rows)).astype(int)
    return np.stack([reader.read_rows(camera, int(r), int(r) + 1)[0] for r in rows])
