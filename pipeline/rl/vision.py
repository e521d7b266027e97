"""Vision rollouts: envs step and render in worker processes; the main process encodes the frames
of all N envs of a step as one batch (RRL encoded one frame at a time), then runs the policy.

Policy inputs are built exactly as from the feature store: per-camera features rounded through
float16 (the store's dtype), concatenated in camera order, then proprioception per the mode.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.rl.policy import Array, GaussianMLPPolicy
from pipeline.rl.sampler import Path
from pipeline.rl.workers import PipeWorkers

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
    mine = {"encoder": encoder.name, "weights": _weights_id(encoder.weights),
            "precision": encoder.precision,
            "crop": encoder.preprocessing.get("crop"), "resize": encoder.preprocessing.get("resize")}
    theirs = {"encoder": attrs.get("encoder"), "weights": _weights_id(attrs.get("weights") or {}),
              "precision": attrs.get("precision"),
              "crop": (attrs.get("preprocessing") or {}).get("crop"),
              "resize": (attrs.get("preprocessing") or {}).get("resize")}
    diff = {k: (theirs[k], mine[k]) for k in mine if mine[k] != theirs[k]}
    if diff:
        detail = ", ".join(f"{k}: store {a!r} vs rollout {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"the rollout encoder differs from the one that made the policy's "
                          f"training features in {store} ({detail}). Fix: roll out with the "
                          "store's encoder settings (ENCODER=, WEIGHTS=, PRECISION=)")


def _weights_id(w: dict[str, Any]) -> tuple[Any, ...]:
    return (w.get("kind"), w.get("tag"), w.get("sha256"), w.get("state_dict_sha256"))


# --- worker side ---------------------------------------------------------------------------
def _observe(env: Any, record: bool) -> dict[str, Any]:
    out = {"frames": env.render_all(), "proprio": env.proprio()}
    if record:
        out["state"] = np.concatenate([env.data.qpos, env.data.qvel])
        out["obs"] = env.observation()
    return out


def _render_worker(conn: Connection, task: str, n_envs: int, env_kwargs: dict[str, Any],
                   record: bool) -> None:
    from pipeline.envs.adroit import AdroitEnv

    envs = [AdroitEnv(task, horizon=10**9, **env_kwargs) for _ in range(n_envs)]
    try:
        while (msg := conn.recv()) is not None:
            kind, items = msg
            if kind == "reset":
                replies = []
                for slot, seed in items:
                    envs[slot].reset(seed=seed)
                    replies.append(_observe(envs[slot], record))
            else:
                replies = []
                for slot, action in items:
                    _, reward, _, info = envs[slot].step(action)
                    replies.append({**_observe(envs[slot], record), "reward": reward,
                                    "success": bool(info.get("success", False))})
            conn.send(replies)
    finally:
        for env in envs:
            env.close()
        conn.close()


# --- main side -----------------------------------------------------------------------------
class VisionSampler:
    """`n_envs` envs spread over `workers` processes; frames encoded in the main process.

    ``encode_batch=None`` encodes all N frames of a step together; ``encode_batch=1`` is RRL's
    per-frame encoding, kept for the benchmark. ``record=True`` keeps frames, states and the
    env's low-dimensional observation in each path (``path["record"]``) for writing to stores.
    """

    def __init__(self, task: str, encoder: FrozenEncoder, obs_spec: ObsSpec, n_envs: int = 8,
                 workers: int = 2, reward: str = "dense", width: int = 256, height: int = 256,
                 shadows: bool = False, encode_batch: int | None = None, record: bool = False) -> None:
        if obs_spec.mode not in VISION_MODES:
            raise ConfigError(f"VisionSampler needs a vision mode ({', '.join(VISION_MODES)}), "
                              f"got {obs_spec.mode!r}")
        self.task, self.encoder, self.obs_spec = task, encoder, obs_spec
        self.n_envs, self.encode_batch, self.record = n_envs, encode_batch, record
        self.timings = {"encode": 0.0, "envs": 0.0, "policy": 0.0, "frames": 0}
        env_kwargs = {"reward": reward, "cameras": obs_spec.cameras, "width": width,
                      "height": height, "shadows": shadows}
        workers = max(1, min(workers, n_envs))
        self.slots = [(s % workers, s // workers) for s in range(n_envs)]  # slot -> (worker, local)
        counts = [sum(1 for wk, _ in self.slots if wk == w) for w in range(workers)]
        self.workers = PipeWorkers(_render_worker,
                                   [(task, n, env_kwargs, record) for n in counts])
        self.conns = self.workers.conns

    def _exchange(self, kind: str, items: Sequence[tuple[int, Any]]) -> list[dict[str, Any]]:
        """Send per-slot items to their workers; replies come back in slot order."""
        started = time.perf_counter()
        per_worker: dict[int, list[tuple[int, int, Any]]] = {}
        for slot, payload in items:
            worker, local = self.slots[slot]
            per_worker.setdefault(worker, []).append((slot, local, payload))
        for worker, entries in per_worker.items():
            self.conns[worker].send((kind, [(local, p) for _, local, p in entries]))
        replies: dict[int, dict[str, Any]] = {}
        for worker, entries in per_worker.items():
            for (slot, _, _), reply in zip(entries, self.conns[worker].recv(), strict=True):
                replies[slot] = reply
        self.timings["envs"] += time.perf_counter() - started
        return [replies[slot] for slot, _ in items]

    def encode(self, frames: Array) -> Array:
        started = time.perf_counter()
        step = self.encode_batch or len(frames)
        out = np.concatenate([self.encoder.encode(frames[i:i + step])
                              for i in range(0, len(frames), step)])
        self.timings["encode"] += time.perf_counter() - started
        self.timings["frames"] += len(frames)
        return out

    def _inputs(self, obs: list[dict[str, Any]], noise_rngs: list[np.random.Generator]) -> Array:
        feats = {c: self.encode(np.stack([o["frames"][c] for o in obs])) for c in self.obs_spec.cameras}
        proprio = np.stack([o["proprio"] for o in obs])
        rows = [self.obs_spec.assemble({c: f[k:k + 1] for c, f in feats.items()}, proprio[k:k + 1],
                                       noise_rngs[k]) for k in range(len(obs))]
        return np.concatenate(rows)

    def sample(self, policy: GaussianMLPPolicy, n_trajectories: int, horizon: int, seed: int,
               deterministic: bool = False) -> list[Path]:
        paths: list[Path] = []
        for start in range(0, n_trajectories, self.n_envs):
            ids = list(range(start, min(start + self.n_envs, n_trajectories)))
            paths += self._wave(policy, ids, horizon, seed, deterministic)
        return paths

    def _wave(self, policy: GaussianMLPPolicy, ids: list[int], horizon: int, seed: int,
              deterministic: bool) -> list[Path]:
        slots = list(range(len(ids)))
        act_rngs = [np.random.default_rng(seed + i) for i in ids]  # as the state samplers
        noise_rngs = [np.random.default_rng([seed + i, 1]) for i in ids]
        obs_raw = self._exchange("reset", [(s, seed + i) for s, i in zip(slots, ids, strict=True)])
        obs = self._inputs(obs_raw, noise_rngs)
        rec: list[dict[str, list[Any]]] = [{"observations": [], "actions": [], "rewards": [], "success": [], "raw": []}
               for _ in ids]
        for _ in range(horizon):
            started = time.perf_counter()
            noise = None if deterministic else np.stack(
                [rng.standard_normal(policy.act_dim) for rng in act_rngs])
            actions = policy.act(obs, noise)
            self.timings["policy"] += time.perf_counter() - started
            replies = self._exchange("step", [(s, actions[s]) for s in slots])
            for s, reply in enumerate(replies):
                r = rec[s]
                r["observations"].append(obs[s])
                r["actions"].append(actions[s])
                r["rewards"].append(reply["reward"])
                r["success"].append(reply["success"])
                if self.record:
                    r["raw"].append(obs_raw[s])
            obs_raw = replies
            obs = self._inputs(replies, noise_rngs)
        return [self._path(r) for r in rec]

    def _path(self, r: dict[str, list[Any]]) -> Path:
        path: Path = {"observations": np.asarray(r["observations"], dtype=np.float32),
                      "actions": np.asarray(r["actions"]),
                      "rewards": np.asarray(r["rewards"], dtype=np.float64),
                      "success": np.asarray(r["success"], dtype=bool),
                      "terminated": np.asarray(False)}
        if self.record:
            raw = r["raw"]
            path["frames"] = {c: np.stack([o["frames"][c] for o in raw]) for c in self.obs_spec.cameras}  # type: ignore[assignment]
            path["proprio"] = np.stack([o["proprio"] for o in raw])
            path["states"] = np.stack([o["state"] for o in raw])
            path["state_obs"] = np.stack([o["obs"] for o in raw])
        return path

    def close(self) -> None:
        self.workers.close()

    def __enter__(self) -> VisionSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
