"""Linear probes: how much of the simulator state a frozen encoder's features carry, linearly.

A probe fits ridge regression from feature rows (one per rendered frame) to named parts of the
task's low-dimensional observation (``obs/state`` of the episode file, same row order as the
feature store). What the numbers in ``probe.json`` mean:

- Splits are over whole demos, never rows: neighbouring frames of a demo are near-duplicates, so a
  row split would score memorisation. ``test_fraction`` of the demos (a seeded shuffle) are held
  out and R^2 is measured on them once (an outer split, not nested k-fold: a 2048-d probe then
  costs one eigendecomposition per fold plus one, and stays within seconds).
- Alpha is chosen per target from a grid by group k-fold over the remaining demos: the alpha with
  the least held-out squared error, pooled over folds, each dim weighted by its variance. The
  probe is then refitted on all training demos with that alpha.
- Ridge is closed form in float64: inputs standardized with the fitted rows' mean and std, targets
  centred (the intercept is not penalised); one eigendecomposition of the Gram matrix gives the
  solution for every alpha.
- R^2 = 1 - SSE/SST on the held-out rows (SST about their own mean), per dim; a target of several
  dims reports the mean over its dims. It is negative when a probe predicts worse than that mean,
  and None for a dim that is constant on the held-out demos.
- The state ceiling probes each target from the observation minus the target's own dims: what the
  rest of the state explains linearly. Dims derived from the target stay in (door: palm - handle),
  so a target the rest of the state determines linearly scores near 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import ProbeConfig
from pipeline.encoders.layers import select_features
from pipeline.envs.tasks import task_spec
from pipeline.errors import ConfigError, NonFiniteError, bad_store

STATE_KEY = "obs/state"


@dataclass(frozen=True)
class Target:
    name: str
    dims: tuple[int, ...]  # indices into the task's observation
    meaning: str


def _dims(start: int, stop: int) -> tuple[int, ...]:
    return tuple(range(start, stop))


# Indices follow gymnasium-robotics' ``_get_obs`` of each Adroit env (v1), checked against the
# simulator in tests/test_probe.py. Door: qpos[1:-2] (27 arm and hand joints), latch, hinge, palm,
# handle, palm - handle, open flag; the same split as DOOR_JOINT_DIMS/DOOR_SITE_DIMS in replay.
TARGETS: dict[str, tuple[Target, ...]] = {
    "door": (Target("hinge", (28,), "door hinge angle (rad)"),
             Target("latch", (27,), "latch angle (rad)"),
             Target("handle", _dims(32, 35), "handle site position (m)"),
             Target("palm", _dims(29, 32), "palm site position (m)")),
    "hammer": (Target("hammer_pos", _dims(36, 39), "hammer body position (m)"),
               Target("hammer_rot", _dims(39, 42), "hammer Euler angles (rad)"),
               Target("nail_pos", _dims(42, 45), "nail target site position (m)"),
               Target("nail_depth", (26,), "nail slide joint (m)"),
               Target("palm", _dims(33, 36), "palm site position (m)")),
    "pen": (Target("pen_pos", _dims(24, 27), "pen body position (m)"),
            Target("pen_dir", _dims(33, 36), "pen axis, unit vector"),
            Target("goal_dir", _dims(36, 39), "goal axis, unit vector")),
    "relocate": (Target("palm_to_ball", _dims(30, 33), "palm - ball (m)"),
                 Target("palm_to_goal", _dims(33, 36), "palm - goal (m)"),
                 Target("ball_to_goal", _dims(36, 39), "ball - goal (m)")),
}


def targets_for(task: str) -> tuple[Target, ...]:
    if task not in TARGETS:
        raise ConfigError(
            f"probe: no state targets for task {task!r}; the probe knows the Adroit tasks "
            f"({', '.join(TARGETS)}). Fix: probe one of those, or add {task}'s targets to "
            "TARGETS in pipeline/encoders/probe.py")
    return TARGETS[task]


def target_columns(task: str) -> tuple[list[int], list[tuple[str, list[int]]]]:
    """The observation dims of all of ``task``'s targets, in order, and each target's columns
    among them (the groups ``probe`` scores)."""
    cols: list[int] = []
    groups: list[tuple[str, list[int]]] = []
    for t in targets_for(task):
        groups.append((t.name, list(range(len(cols), len(cols) + len(t.dims)))))
        cols += t.dims
    return cols, groups


# --- splits ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoSplit:
    """Demo indices: the held-out test demos and the inner folds that partition the rest."""

    test: tuple[int, ...]
    folds: tuple[tuple[int, ...], ...]

    @property
    def train(self) -> tuple[int, ...]:
        return tuple(sorted(d for fold in self.folds for d in fold))


def split_demos(n_demos: int, test_fraction: float, folds: int, seed: int) -> DemoSplit:
    """Hold out ``round(test_fraction * n)`` demos (at least 1), deal the rest into folds."""
    n_test = max(1, round(test_fraction * n_demos))
    if n_demos - n_test < 2:
        raise ConfigError(f"probe: {n_demos} demos leave {n_demos - n_test} for training after "
                          f"holding out {n_test}; choosing alpha needs at least 2 training demos. "
                          "Fix: render more demos (render.max_demos) or lower probe.test_fraction")
    order = np.random.default_rng(seed).permutation(n_demos)
    train = order[n_test:]
    k = min(folds, len(train))
    return DemoSplit(tuple(sorted(int(d) for d in order[:n_test])),
                     tuple(tuple(sorted(int(d) for d in train[i::k])) for i in range(k)))


def row_demos(episode_ends: np.ndarray) -> np.ndarray:
    """The demo index of each row, from cumulative episode ends."""
    lengths = np.diff(np.concatenate([[0], np.asarray(episode_ends, dtype=np.int64)]))
    return np.repeat(np.arange(len(lengths)), lengths)


# --- ridge -----------------------------------------------------------------------------------

class RidgePath:
    """Ridge fits of ``y`` on ``x`` for any alpha, from one eigendecomposition."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x_mean = x.mean(axis=0)
        std = x.std(axis=0)
        # A feature constant on the fitted rows carries nothing; scale 1 keeps it at zero.
        self.x_scale = np.where(std > 1e-12 * (1 + np.abs(self.x_mean)), std, 1.0)
        self.y_mean = y.mean(axis=0)
        xs = (x - self.x_mean) / self.x_scale
        eigvals, self.eigvecs = np.linalg.eigh(xs.T @ xs)
        self.eigvals = np.clip(eigvals, 0.0, None)
        self.projected = self.eigvecs.T @ (xs.T @ (y - self.y_mean))

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` in the eigenbasis: computed once, then predicted for many alphas."""
        return ((x - self.x_mean) / self.x_scale) @ self.eigvecs

    def predict_rotated(self, rotated: np.ndarray, alpha: float) -> np.ndarray:
        return rotated @ (self.projected / (self.eigvals + alpha)[:, None]) + self.y_mean

    def predict(self, x: np.ndarray, alpha: float) -> np.ndarray:
        return self.predict_rotated(self.rotate(x), alpha)

    def coef(self, alpha: float) -> np.ndarray:
        """Weights on the standardized inputs, (d, targets)."""
        return self.eigvecs @ (self.projected / (self.eigvals + alpha)[:, None])


def squared_errors(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SSE, SST) per column, SST about the column mean of ``y``."""
    return ((y - pred) ** 2).sum(axis=0), ((y - y.mean(axis=0)) ** 2).sum(axis=0)


def r2_scores(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R^2 per column; NaN where ``y`` is constant."""
    sse, sst = squared_errors(y, pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)


# --- probing ---------------------------------------------------------------------------------

def _mean_or_none(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(finite.mean()), 6) if len(finite) else None


def probe(x: np.ndarray, y: np.ndarray, groups: list[tuple[str, list[int]]], rows_demo: np.ndarray,
          split: DemoSplit, alphas: tuple[float, ...]) -> dict[str, dict[str, Any]]:
    """Fit and score one probe; ``groups`` names column sets of ``y`` (a target each)."""
    in_test = np.isin(rows_demo, split.test)
    sse = np.zeros((len(alphas), y.shape[1]))
    sst = np.zeros(y.shape[1])
    for fold in split.folds:
        held = np.isin(rows_demo, fold)
        fit = ~in_test & ~held
        path = RidgePath(x[fit], y[fit])
        rotated = path.rotate(x[held])
        for i, alpha in enumerate(alphas):
            sse[i] += squared_errors(y[held], path.predict_rotated(rotated, alpha))[0]
        sst += squared_errors(y[held], y[held])[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        cv_loss = np.where(sst > 0, sse / np.where(sst > 0, sst, 1.0), np.nan)
    final = RidgePath(x[~in_test], y[~in_test])
    rotated = final.rotate(x[in_test])
    out: dict[str, dict[str, Any]] = {}
    for name, cols in groups:
        loss = cv_loss[:, cols]
        # A target constant on every fold scores nothing: take the strongest shrinkage.
        best = int(np.nanargmin(np.nanmean(loss, axis=1))) if np.isfinite(loss).any() else len(alphas) - 1
        r2 = r2_scores(y[in_test][:, cols], final.predict_rotated(rotated, alphas[best])[:, cols])
        out[name] = {
            "r2": _mean_or_none(r2),
            "r2_per_dim": [None if math.isnan(v) else round(float(v), 6) for v in r2],
            "alpha": alphas[best], "alpha_at_edge": best in (0, len(alphas) - 1),
            "cv_r2": _mean_or_none(1.0 - loss[best]),
        }
    return out


def trajectory_groups(seeds: Sequence[int | None]) -> np.ndarray:
    """Per episode, its trajectory: episodes reset with the same seed (one rollout rendered at
    several distractor levels) are one trajectory; an episode without a seed is its own."""
    ids: dict[int, int] = {}
    out = []
    for i, seed in enumerate(seeds):
        key = -1 - i if seed is None else int(seed)  # a seed is >= 0
        out.append(ids.setdefault(key, len(ids)))
    return np.asarray(out, dtype=np.int64)


def probe_features(features: np.ndarray, state: np.ndarray, episode_ends: np.ndarray,
                   task: str, cfg: ProbeConfig, trajectories: np.ndarray | None = None
                   ) -> dict[str, Any]:
    """The encoder's probe and the state ceiling for every target of ``task``.

    Demos are split by ``trajectories`` (``trajectory_groups``; default: each episode its own),
    so that no trajectory is tested on while another rendering of it was trained on.
    """
    targets = targets_for(task)
    of_episode = np.arange(len(episode_ends)) if trajectories is None else np.asarray(trajectories)
    split = split_demos(int(of_episode.max()) + 1, cfg.test_fraction, cfg.folds, cfg.seed)
    rows_demo = of_episode[row_demos(episode_ends)]
    cols, groups = target_columns(task)
    # Dims constant on every row (dead units: a third of a random MobileNetV3's) are zero in
    # every fold once standardized; dropping them changes no prediction, only the eigh's cost.
    varying = np.ptp(features, axis=0) > 0
    encoder = probe(features[:, varying], state[:, cols], groups, rows_demo, split, cfg.alphas)
    ceiling = {}
    for t in targets:
        rest = np.delete(state, t.dims, axis=1)
        ceiling.update(probe(rest, state[:, list(t.dims)], [(t.name, list(range(len(t.dims))))],
                             rows_demo, split, cfg.alphas))
    in_test = np.isin(rows_demo, split.test)

    def episodes(of: tuple[int, ...]) -> list[int]:
        return [int(e) for e in np.flatnonzero(np.isin(of_episode, of))]

    return {
        "targets": [{"name": t.name, "dims": list(t.dims), "meaning": t.meaning,
                     "features": encoder[t.name], "state_ceiling": ceiling[t.name]}
                    for t in targets],  # a list: JSON files sort keys, the table keeps this order
        "test_demos": episodes(split.test), "folds": [episodes(f) for f in split.folds],
        "rows": len(state), "train_rows": int((~in_test).sum()), "test_rows": int(in_test.sum()),
        "input_dim": int(features.shape[1]), "constant_dims": int((~varying).sum()),
        "alphas": list(cfg.alphas),
        "ceiling_inputs": "the task observation minus the target's own dims",
    }


# --- inputs ----------------------------------------------------------------------------------

@dataclass
class ProbeData:
    features: np.ndarray  # (rows, input_dim) float64: cameras in store order, then proprio
    state: np.ndarray  # (rows, obs_dim) float64
    episode_ends: np.ndarray
    cameras: tuple[str, ...]
    store_attrs: dict[str, Any]
    names: list[str]  # the stored features probed, concatenated per camera in this order
    trajectories: np.ndarray  # per episode, its trajectory (trajectory_groups)


def load_probe_data(store_url: str, feature_key: str, episodes_file: str, task: str,
                    include_proprio: bool, chosen: tuple[str, ...] = ()) -> ProbeData:
    """Features and states of the same rows; refuses a store and an episode file that disagree.
    ``chosen``: the stored features to probe (``FEATURES=``; empty: all, concatenated)."""
    from pipeline.store.episodes import EpisodeReader
    from pipeline.store.features import open_features

    store = open_features(store_url, feature_key)
    names = select_features(list(store.features), chosen, store.location)
    parts = [store.read_features(cam, names).astype(np.float64) for cam in store.cameras]
    if include_proprio:
        parts.append(store.low_dim("proprio").astype(np.float64))
    features = np.concatenate(parts, axis=1)
    with EpisodeReader(episodes_file) as reader:
        ends, state = reader.episode_ends, reader.read_all(STATE_KEY).astype(np.float64)
        trajectories = trajectory_groups([reader.attrs(i).get("seed") for i in range(len(ends))])
    if not np.array_equal(ends, store.episode_ends):
        raise bad_store(store.location, f"episode ends {store.episode_ends[:4].tolist()}... do not "
                        f"match those of {episodes_file} ({ends[:4].tolist()}...): rows would "
                        "pair features with other frames' states",
                        "re-run encode on this episode file (FORCE=1 encode)")
    expected = task_spec(task).obs_dim
    if state.shape[1] != expected:
        raise bad_store(f"{episodes_file}:{STATE_KEY}", f"width {state.shape[1]}, but {task} "
                        f"observations have {expected}", "re-render with the current render stage")
    for what, values in (("features", features), ("states", state)):
        if not np.isfinite(values).all():
            raise NonFiniteError(f"{store.location}: {what} hold NaN or infinite values "
                                 f"({int((~np.isfinite(values)).sum())} of them); nothing was "
                                 "probed. Fix: re-encode with encode.precision=fp32, or check "
                                 "the encoder's weights")
    return ProbeData(features, state, ends, store.cameras, dict(store.attrs), names, trajectories)


def run_probe(store_url: str, feature_key: str, episodes_file: str, task: str,
              cfg: ProbeConfig) -> dict[str, Any]:
    """Load and probe: the whole job as one call, for a worker process to run."""
    started = time.perf_counter()
    data = load_probe_data(store_url, feature_key, episodes_file, task, cfg.include_proprio,
                           cfg.features)
    loaded = time.perf_counter()
    result = probe_features(data.features, data.state, data.episode_ends, task, cfg,
                            data.trajectories)
    a = data.store_attrs
    return {"encoder": a.get("encoder"), "weights": a.get("weights") or {},
            "precision": a.get("precision"), "preprocessing": a.get("preprocessing"),
            "feature_dim": int(a.get("feature_dim", 0)), "cameras": list(data.cameras),
            **({"features": data.names} if cfg.features or a.get("features") else {}),
            "demos": len(data.episode_ends), **result, "load_seconds": round(loaded - started, 2),
            "probe_seconds": round(time.perf_counter() - loaded, 2)}
