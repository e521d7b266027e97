"""The work of the encode stage: frames from the episode file -> frozen encoder -> feature rows.

``ShardEncoder`` is what runs on dask workers. It is a small picklable description; the model
itself is built once per worker process and cached here, never shipped with a task. The cache is
keyed by what the weights are (a file's sha256), never by their path: a long-lived worker must
not keep encoding with the old weights after the file at that path was replaced.

``EncoderParams.device`` is where the model runs, as the process that builds it names it: on a
GPU worker (one GPU visible, ``CUDA_VISIBLE_DEVICES``) that is ``cuda:0`` whichever GPU it is.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.devices import describe, resolve_device
from pipeline.encoders.framestack import stacked_rows
from pipeline.errors import ConfigError, WeightsError
from pipeline.store.episodes import EpisodeReader

if TYPE_CHECKING:
    from pipeline.encoders.frozen import FrozenEncoder

_ENCODERS: OrderedDict[str, FrozenEncoder] = OrderedDict()
# A worker needs one encoder; the stage's driver two (fp32 reference and bf16). Older ones would
# only hold memory (a resnet50 is ~100 MB).
_MAX_ENCODERS = 2
# Path -> (the file's identity when opened, its reader). A file re-rendered at the same path
# (FORCE=1 render, then encode on a long-lived cluster) is a new file: the old reader would go on
# reading the deleted one's frames, next to the new file's actions read by the driver.
_READERS: dict[str, tuple[tuple[int, ...], EpisodeReader]] = {}


@dataclass(frozen=True)
class EncoderParams:
    encoder: str
    weights: str
    precision: str
    resize: int
    crop: int
    # sha256 of the weights file the stage's key was computed from (None for pretrained/random).
    weights_sha256: str | None = None
    device: str = "cpu"  # resolved by whoever builds the model: auto, cpu, cuda or cuda:N
    interpolation: str | None = None
    layers: tuple[str, ...] = ()
    pool: str = "auto"
    weights_prefix: str | None = None

    def build(self) -> FrozenEncoder:
        from pipeline.encoders import create_encoder

        return create_encoder(self.encoder, weights=self.weights, precision=self.precision,
                              resize=self.resize, crop=self.crop, device=self.device,
                              interpolation=self.interpolation, layers=self.layers,
                              pool=self.pool, weights_prefix=self.weights_prefix)

    def identity(self) -> dict[str, str]:
        """What the weights are right now (a file is hashed; the hash is cached while its stat is unchanged)."""
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
    key = json.dumps([params.encoder, identity, params.precision, params.resize, params.crop,
                      params.device, params.interpolation, list(params.layers), params.pool,
                      params.weights_prefix], sort_keys=True)
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


def _file_identity(path: str) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _reader(path: str) -> EpisodeReader:
    identity = _file_identity(path)
    cached = _READERS.get(path)
    if cached is not None and cached[0] == identity:
        return cached[1]
    if cached is not None:
        cached[1].close()
    reader = EpisodeReader(path)
    _READERS[path] = (identity, reader)
    return reader


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
        out = [encoder.encode(encoder_rows(reader, self.camera, s, min(stop, s + self.batch_size),
                                           encoder.frame_stack))
               for s in range(start, stop, self.batch_size)]
        return np.concatenate(out).astype(np.float16)


def encoder_rows(reader: EpisodeReader, camera: str, start: int, stop: int,
                 frame_stack: int) -> np.ndarray:
    """The encoder's inputs for rows ``start .. stop-1``: the frames, or with a frame stack each
    row's last frames of its episode (``pipeline.encoders.framestack``)."""
    if frame_stack == 1:
        return reader.read_rows(camera, start, stop)

    return stacked_rows(lambda a, b: reader.read_rows(camera, a, b), start, stop,
                        reader.episode_ends, frame_stack)


def encoder_devices() -> list[str]:
    """The devices of the encoders built in this process (run on each worker: where they ran)."""
    return sorted({str(encoder.device) for encoder in _ENCODERS.values()})


@dataclass(frozen=True)
class Placement:
    """Where the encode stage computes, from the ``encode.device`` setting.

    The stage process checks the weights and the precision on ``device``. The cluster has
    ``workers`` workers: on a local one, one per GPU in ``gpus`` (each sees only its own, so its
    model goes on ``cuda:0``), else CPU workers; encode tasks ask for ``resources``.
    """

    device: str
    gpus: tuple[int, ...]
    workers: int

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def worker_device(self) -> str:
        return "cuda:0" if self.on_cuda else "cpu"

    @property
    def resources(self) -> dict[str, float] | None:
        return {"GPU": 1} if self.on_cuda else None

    def summary(self, worker_devices: dict[str, list[str]]) -> dict[str, Any]:
        """What the stage records: the device, and where the workers' encoders really ran
        (``client.run(encoder_devices)``)."""
        ran = sorted({d for found in worker_devices.values() for d in found})
        return {**describe(self.device), "gpus": list(self.gpus), "workers": ran}


def placement(device: str, workers: int, remote: bool) -> Placement:
    """The placement for the setting ``encode.device`` (a missing GPU is a ConfigError here,
    before any work); ``remote``: a scheduler's workers bring their own GPUs, one each."""
    from pipeline.distributed import local_gpus

    try:
        resolved = resolve_device(device)
    except ConfigError as exc:
        raise ConfigError(f"encode.device: {exc}") from None
    gpus = () if remote else local_gpus(device)
    return Placement(resolved, gpus, len(gpus) or workers)


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def precision_agreement(params: EncoderParams, frames: np.ndarray) -> float:
    """Smallest cosine similarity between this precision's features and fp32's on ``frames``."""
    a = cached_encoder(replace(params, precision="fp32")).encode(frames).astype(np.float64)
    b = cached_encoder(params).encode(frames).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.min())


def sample_frames(episodes_path: str, camera: str, count: int, frame_stack: int = 1) -> np.ndarray:
    """``count`` encoder inputs (frames, or stacks of them) spread evenly over the episode file."""
    reader = _reader(episodes_path)
    rows = np.linspace(0, reader.num_rows - 1, min(count, reader.num_rows)).astype(int)
    return np.concatenate([encoder_rows(reader, camera, int(r), int(r) + 1, frame_stack)
                           for r in rows])
