"""Vision rollouts: the shared rollout loop with the envs stepping and rendering in worker
processes and the main process encoding the frames of all N envs of a step as one batch (RRL
encoded one frame at a time) before the policy runs.

Policy inputs are built exactly as from the feature store: per-camera features rounded through
float16 (the store's dtype), concatenated in camera order, then proprioception per the mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.encoders.framestack import FrameStackView, encoder_frames
from pipeline.errors import ConfigError
from pipeline.rl.env_backends import WorkerEnvs, camera_view, recorded_view, task_env
from pipeline.rl.rollout_loop import LoopSampler
from pipeline.rl.rollouts import Array, Rollout, SampledPolicy

if TYPE_CHECKING:
    from pipeline.encoders.frozen import FrozenEncoder

VISION_MODES = ("vision+proprio", "vision", "noisy_proprio")


@dataclass(frozen=True)
class ObsSpec:
    """How camera features and proprioception become the policy's input vector."""

    mode: str
    cameras: tuple[str, ...]
    proprio_noise: float = 0.0

    def assemble(self, features: dict[str, Array], proprio: Array,
                 rng: np.random.Generator | None = None) -> Array:
        parts = [np.asarray(features[c], dtype=np.float16).astype(np.float32) for c in self.cameras]
        if self.mode == "vision+proprio":
            parts.append(np.asarray(proprio, dtype=np.float32))
        elif self.mode == "noisy_proprio":
            noise_rng = rng or np.random.default_rng(0)
            noise = noise_rng.standard_normal(np.shape(proprio)) * self.proprio_noise
            parts.append((np.asarray(proprio) + noise).astype(np.float32))
        return np.concatenate(parts, axis=-1)


def check_encoder_matches_store(encoder: FrozenEncoder, attrs: dict[str, Any], store: str) -> None:
    """Refuse to roll out with an encoder other than the one that made the training features."""
    pre = attrs.get("preprocessing") or {}
    # Older stores recorded no crop mode: theirs was the centre crop.
    stored_pre = {k: pre.get(k) for k in _INPUT}
    stored_pre["crop_mode"] = stored_pre["crop_mode"] or "center"
    mine = {"encoder": encoder.name, "weights": _weights_id(encoder.weights),
            "precision": encoder.precision, "features": encoder.features,
            **{k: encoder.preprocessing.get(k) for k in _INPUT}}
    theirs = {"encoder": attrs.get("encoder"), "weights": _weights_id(attrs.get("weights") or {}),
              "precision": attrs.get("precision"),
              "features": {n: w for n, w in attrs.get("features", [])} or {"pre_logits":
                                                                          attrs.get("feature_dim")},
              **{k: stored_pre.get(k) for k in _INPUT}}
    diff = {k: (theirs[k], mine[k]) for k in mine if mine[k] != theirs[k]}
    if diff:
        detail = ", ".join(f"{k}: store {a!r} vs rollout {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"the rollout encoder differs from the one that made the policy's "
                          f"training features in {store} ({detail}). Fix: roll out with the "
                          "store's encoder settings (ENCODER=, WEIGHTS=, PRECISION=)")


_INPUT = ("resize", "crop", "interpolation", "crop_mode", "mean", "std")


def _weights_id(w: dict[str, Any]) -> tuple[Any, ...]:
    return (w.get("kind"), w.get("tag"), w.get("sha256"), w.get("state_dict_sha256"))


class EncodedObservations:
    """The loop's observation function for vision modes: each camera's frames of all live envs
    encoded as one batch (``encode_batch=1``: RRL's frame-at-a-time, kept for the benchmark).

    ``threads`` (CPU): the batch is cut into that many contiguous parts, each encoded on its own
    thread by single-threaded torch. Torch's own threads meet at a barrier after every layer and
    spin there while a render worker holds a core; independent parts never wait for each other,
    so encoding takes whatever cores rendering leaves free. None: one call, torch as it is set.
    """

    def __init__(self, encoder: FrozenEncoder, obs_spec: ObsSpec,
                 encode_batch: int | None = None, threads: int | None = None) -> None:
        self.encoder, self.obs_spec, self.encode_batch = encoder, obs_spec, encode_batch
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads) if threads and threads > 1 else None
        self.seconds, self.frames = 0.0, 0

    def encode(self, frames: Array) -> Array:
        started = time.perf_counter()
        step = self.encode_batch or len(frames)
        batches = [frames[i:i + step] for i in range(0, len(frames), step)]
        with torch_threads(None if self.threads is None else 1):
            out = np.concatenate([self._encode_batch(batch) for batch in batches])
        self.seconds += time.perf_counter() - started
        self.frames += len(frames)
        return out

    def _encode_batch(self, frames: Array) -> Array:
        if self.pool is None or self.threads is None or len(frames) < 2:
            return self.encoder.encode(frames)
        # Threads started here take torch's thread count (1, set by the caller) on first use.
        parts = np.array_split(frames, min(len(frames), self.threads))
        return np.concatenate(list(self.pool.map(self.encoder.encode, parts)))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def __call__(self, raw: Sequence[dict[str, Any]], rngs: Sequence[np.random.Generator]) -> Array:
        feats = {c: self.encode(np.stack([encoder_frames(o, c) for o in raw]))
                 for c in self.obs_spec.cameras}
        proprio = np.stack([o["proprio"] for o in raw])
        # Row by row: each env's proprioception noise comes from its own trajectory's generator.
        rows = [self.obs_spec.assemble({c: f[k:k + 1] for c, f in feats.items()}, proprio[k:k + 1],
                                       rngs[k]) for k in range(len(raw))]
        return np.concatenate(rows)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run torch on ``threads`` threads inside the block (None: unchanged); restored after."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class SamplerLayout:
    """How a VisionSampler spreads its work: render worker processes, env groups, threads."""

    workers: int
    groups: int
    pipelined: bool
    encode_threads: int | None  # None: torch's own thread count

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        threads = self.encode_threads or "torch's"
        how = "pipelined, 2 groups" if self.pipelined else "one batch per step"
        return f"{how}, {self.workers} render workers, {threads} encode threads"


def vision_layout(cores: int, cuda: bool) -> SamplerLayout:
    """The sampler layout for ``cores`` CPU cores, with the encoder on CUDA or on the CPU.

    On the CPU, rendering and encoding compete for the same cores, so overlapping them gains
    nothing: the best layout lets each phase have every core in turn (a render worker per core,
    then the whole step's batch encoded on torch's threads). Measured by bench/rollout.py on 2
    idle cores (resnet34 bf16, 8 envs): 0.98 of the core-time limit at 256 px and 0.88 at 64 px,
    against 0.83 and 0.75 pipelined. With the encoder on CUDA the GPU works while the cores
    render, so the envs are split in two groups, one encoded while the other renders, and every
    core but this process's renders.
    """
    if cuda:
        return SamplerLayout(max(1, cores - 1), groups=2, pipelined=True, encode_threads=1)
    return SamplerLayout(max(1, cores), groups=1, pipelined=False, encode_threads=None)


def recorded_arrays(raw: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A trajectory's ``recorded_view`` per step as the rollout fields episode files store."""
    cameras = list(raw[0]["frames"]) if raw else []
    return {"frames": {c: np.stack([o["frames"][c] for o in raw]) for c in cameras},
            "proprio": np.stack([o["proprio"] for o in raw]),
            "states": np.stack([o["state"] for o in raw]),
            "state_obs": np.stack([o["obs"] for o in raw])}


class VisionSampler(LoopSampler):
    """`n_envs` envs spread over `workers` processes; frames encoded in the main process.

    ``groups=2, pipelined=True`` encodes one half of the envs while the workers render the
    other (``pipeline.rl.rollout_loop``); ``vision_layout`` gives workers and ``encode_threads``
    for the machine. With ``encode_threads`` set, the policy runs on one torch thread too: a
    few rows per call, where a second thread only waits. ``record=True`` keeps frames, states
    and the env's low-dimensional observation in each rollout (``recorded_arrays``) for writing
    to an episode file. ``env_factory`` is called like ``task_env``
    (``pipeline.rl.distracted`` passes one that renders distractors).
    """

    def __init__(self, task: str, encoder: FrozenEncoder, obs_spec: ObsSpec, n_envs: int = 8,
                 workers: int = 2, reward: str = "dense", width: int = 256, height: int = 256,
                 shadows: bool = False, encode_batch: int | None = None, record: bool = False,
                 env_factory: Callable[..., Any] = task_env, groups: int = 1,
                 pipelined: bool = False, encode_threads: int | None = None) -> None:
        if obs_spec.mode not in VISION_MODES:
            raise ConfigError(f"VisionSampler needs a vision mode ({', '.join(VISION_MODES)}), "
                              f"got {obs_spec.mode!r}")
        make_env = partial(env_factory, task, reward=reward, cameras=obs_spec.cameras, width=width,
                           height=height, shadows=shadows)
        view: Any = recorded_view if record else camera_view
        if encoder.frame_stack > 1:  # the envs keep their last frames (pipeline.encoders.framestack)
            view = FrameStackView(encoder.frame_stack, view)
        self.backend = WorkerEnvs(make_env, n_envs, workers, view)
        self.encoded = EncodedObservations(encoder, obs_spec, encode_batch, encode_threads)
        super().__init__(self.backend, self.encoded, recorded_arrays if record else None, groups,
                         pipelined)
        self.task = task
        self.device = str(encoder.device)  # where the frames are encoded, for the summaries

    def sample_ids(self, policy: SampledPolicy, ids: Sequence[int], horizon: int, seed: int,
                   deterministic: bool = False) -> list[Rollout]:
        with torch_threads(1 if self.encoded.threads else None):
            return super().sample_ids(policy, ids, horizon, seed, deterministic)

    def close(self) -> None:
        super().close()
        self.encoded.close()

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent encoding and waiting for the envs, and frames encoded, since creation."""
        return {"encode": self.encoded.seconds, "envs": self.backend.seconds,
                "frames": self.encoded.frames}
