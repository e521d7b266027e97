"""The work of the encode stage: frames from the episode file -> frozen encoder -> feature rows.

``ShardEncoder`` is what runs on dask workers. It is a small picklable description; the model
itself is built once per worker process and cached here, never shipped with a task. The cache is
keyed by what the weights are (a file's sha256), never by their path: a long-lived worker must
not keep encoding with the old weights after the file at that path was replaced.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import WeightsError
from pipeline.store.episodes import EpisodeReader

if TYPE_CHECKING:
    from pipeline.encoders.frozen import FrozenEncoder

_ENCODERS: OrderedDict[str, FrozenEncoder] = OrderedDict()
# A worker needs one encoder; the stage's driver two (fp32 reference and bf16). Older ones would
# only hold memory (a resnet50 is ~100 MB).
_MAX_ENCODERS = 2
_READERS: dict[str, EpisodeReader] = {}


@dataclass(frozen=True)
class EncoderParams:
    encoder: str
    weights: str
    precision: str
    resize: int
    crop: int
    # sha256 of the weights file the stage's key was computed from (None for pretrained/random).
    weights_sha256: str | None = None

    def build(self) -> FrozenEncoder:
        from pipeline.encoders import create_encoder

        return create_encoder(self.encoder, weights=self.weights, precision=self.precision,
                              resize=self.resize, crop=self.crop)

    def identity(self) -> dict[str, str]:
        """What the weights are right now (a file is hashed, cached by path, size and mtime)."""
        from pipeline.encoders import weights_identity

        return weights_identity(self.encoder, self.weights)


def _check_weights(params: EncoderParams, found: dict[str, str], what: str) -> None:
    if params.weights_sha256 is not None and found.get("sha256") != params.weights_sha256:
        raise WeightsError(
            f"weights file {params.weights!r} for encoder {params.encoder!r}: {what} has sha256 "
            f"{found.get('sha256')}, but the encode key was computed for "
            f"{params.weights_sha256}; the file was replaced since. Fix: leave the file in place "
            f"while encoding, or run encode again so the key follows the new file")


def cached_encoder(params: EncoderParams, threads: int | None = None) -> FrozenEncoder:
    """The encoder for ``params``, built on first use in this process for these weights."""
    identity = params.identity()
    _check_weights(params, identity, "the file now")
    key = json.dumps([params.encoder, identity, params.precision, params.resize, params.crop],
                     sort_keys=True)
    if key not in _ENCODERS:
        import torch

        if threads:
            torch.set_num_threads(threads)
        encoder = params.build()
        # The file could change between hashing it and loading it: check what was built.
        _check_weights(params, encoder.weights, "the loaded file")
        _ENCODERS[key] = encoder
        while len(_ENCODERS) > _MAX_ENCODERS:
            _ENCODERS.popitem(last=False)
    _ENCODERS.move_to_end(key)
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
    a = cached_encoder(replace(params, precision="fp32")).encode(frames).astype(np.float64)
    b = cached_encoder(params).encode(frames).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.min())


def sample_frames(episodes_path: str, camera: str, count: int) -> np.ndarray:
    """``count`` frames spread evenly over the episode file."""
    reader = _reader(episodes_path)
    rows = np.linspace(0, reader.num_rows - 1, min(count, reader.num_rows)).astype(int)
    return np.stack([reader.read_rows(camera, int(r), int(r) + 1)[0] for r in rows])
