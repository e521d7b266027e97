"""Learning curves from cached logs: ours per cell and per group of seeds, and RRL's.

The curve is a score of the trajectories sampled at each DAPG iteration (the stochastic policy)
against the environment samples used so far (the cumulative ``num_samples``; RRL's logs record
40,000 per iteration). The score follows the task's family (``Metric``): the success rate for
Adroit, the column RRL logs as ``success_rate``; the episode return for DeepMind Control, which
defines no success and whose papers report returns (``stoc_pol_mean``, the mean sampled return).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.envs.dmc_tasks import dmc_task_spec
from pipeline.envs.families import task_facts
from pipeline.manifests import read_manifest
from pipeline.outputs import EVAL_LOG, LOG, reference_log_files
from pipeline.plots import read_csv_rows
from pipeline.runner import MANIFEST
from pipeline.study.cells import TARGET, CellPlan

RRL_ENCODER = "resnet34"  # RRL's logs: ResNet34 features of the task's cameras + proprioception
RRL_OBS_MODE = "vision+proprio"


@dataclass(frozen=True)
class Metric:
    """What a task's curves and tables show, and where the logs keep it."""

    name: str  # "success" | "return"
    column: str  # log.csv column (sampled trajectories of each iteration)
    eval_column: str  # eval.csv column (mean-action evaluation)
    summary_field: str  # the evaluate stage's summary field
    axis: str  # y-axis label
    ylim: tuple[float, float] | None  # None: fitted to the curves
    thresholds: tuple[float, float, float]  # "samples to" columns of the tables
    unit: str  # printed after a value

    def format(self, value: float) -> str:
        return f"{value:.1f}{self.unit}"

    def threshold_labels(self) -> tuple[str, ...]:
        return tuple(f"{t:g}{self.unit}" for t in self.thresholds)


SUCCESS = Metric("success", "success_rate", "eval_success_rate", "success_rate",
                 "sampled success rate (%)", (-2, 102), (10.0, 50.0, 90.0), "%")
# DeepMind Control returns lie in [0, 1000] for every suite task; 800 is where the pixel-RL
# papers' swing-up, spin and walk curves count as solved, 250 where a curve leaves the floor.
RETURN = Metric("return", "stoc_pol_mean", "eval_score", "mean_return",
                "sampled return per episode", (-20, 1020), (250.0, 500.0, 800.0), "")


# Adroit's dense returns have no fixed range (door: about -60 for a hand that never reaches the
# handle, about 3,000 for a door opened early and held): drawn beside success, where a run too
# short to succeed still shows whether it improves.
ADROIT_RETURN = Metric("return", "stoc_pol_mean", "eval_score", "mean_return",
                       "sampled return per episode", None, (0.0, 0.0, 0.0), "")


def metric_for(task: str) -> Metric:
    return SUCCESS if task_facts(task).has_success else RETURN


def companion_metric(task: str) -> Metric | None:
    """A second panel's metric: the return, for tasks whose main metric is success."""
    return ADROIT_RETURN if task_facts(task).has_success else None


@dataclass(frozen=True)
class Curve:
    samples: np.ndarray  # cumulative environment samples after each iteration
    values: np.ndarray  # the task's metric: success percent, or return


@dataclass(frozen=True)
class CellRun:
    """What a cell's cache holds: its state, DAPG logs and stage summaries."""

    plan: CellPlan
    state: str  # "done" | "partial" | "missing"
    curve: Curve | None
    eval_value: float | None  # last per-iteration evaluation (mean action), in the task's metric
    evaluate: dict[str, Any] | None  # the evaluate stage's summary
    seconds: float | None  # bc + DAPG iterations + evaluate
    commit: str | None = None  # the git commit the evaluate stage ran at
    rows: tuple[dict[str, float], ...] = ()  # the DAPG log, for curves of other columns


def curve_of(rows: list[dict[str, float]], metric: Metric = SUCCESS) -> Curve:
    return Curve(np.cumsum([r["num_samples"] for r in rows]),
                 np.array([r[metric.column] for r in rows]))


def planned_iterations(p: CellPlan) -> int:
    """Rows a finished cell's log has: DAPG iterations, or RAD's training episodes."""
    cfg = p.cell.config
    if p.cell.target != "rad":
        return cfg.dapg.iterations

    return dmc_task_spec(cfg.task).episodes_for(cfg.rad.env_steps, cfg.env.horizon)


def collect(p: CellPlan, data_dir: Path) -> CellRun:
    if p.cell.target == "rad":
        return _collect_rad(p, data_dir)
    dapg_dir = p.out_dir(data_dir, "dapg")
    rows = read_csv_rows(dapg_dir / LOG) if (dapg_dir / LOG).exists() else []
    evals = read_csv_rows(dapg_dir / EVAL_LOG) if (dapg_dir / EVAL_LOG).exists() else []
    manifests = {s: read_manifest(p.out_dir(data_dir, s) / MANIFEST) for s in p.own}
    target = manifests.get(TARGET)
    done = target is not None
    state = "done" if done else "partial" if rows else "missing"
    seconds = None
    metric = metric_for(p.cell.config.task)
    if done:
        # DAPG's time from its per-iteration log, which survives a resume (its manifest would
        # count only the last run); bc and evaluate from their manifests.
        dapg_time = sum(r["time_sampling"] + r["time_vpg"] + r["time_npg"] + r["time_VF"] for r in rows)
        seconds = dapg_time + sum(r["time_eval"] for r in evals) + sum(
            float(m["seconds"]) for s, m in manifests.items() if m and s != "dapg")
    return CellRun(p, state, curve_of(rows, metric) if rows else None,
                   evals[-1][metric.eval_column] if evals else None,
                   target["summary"] if target is not None else None, seconds,
                   target.get("git_commit") if target is not None else None, tuple(rows))


def _collect_rad(p: CellPlan, data_dir: Path) -> CellRun:
    """A RAD cell: one log row per training episode (its return), evaluations in eval.csv."""
    folder = p.out_dir(data_dir, "rad")
    rows = read_csv_rows(folder / LOG) if (folder / LOG).exists() else []
    evals = read_csv_rows(folder / EVAL_LOG) if (folder / EVAL_LOG).exists() else []
    manifest = read_manifest(folder / MANIFEST)
    state = "done" if manifest is not None else "partial" if rows else "missing"
    seconds = (sum(r["time_sampling"] + r["time_update"] for r in rows)
               + sum(r["time_eval"] for r in evals)) if manifest is not None else None
    metric = metric_for(p.cell.config.task)
    return CellRun(p, state, curve_of(rows, metric) if rows else None,
                   evals[-1][metric.eval_column] if evals else None,
                   manifest["summary"] if manifest is not None else None, seconds,
                   manifest.get("git_commit") if manifest is not None else None, tuple(rows))


@dataclass(frozen=True)
class Band:
    """Mean and min-max over seeds, on the iterations every seed reached."""

    samples: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def band(curves: list[Curve]) -> Band:
    n = min(len(c.values) for c in curves)
    ys = np.stack([c.values[:n] for c in curves])
    xs = np.stack([c.samples[:n] for c in curves])
    return Band(xs.mean(0), ys.mean(0), ys.min(0), ys.max(0), len(curves))


def samples_to(curve: Curve | Band, threshold: float) -> float | None:
    """Environment samples when the curve first reached `threshold`, else None."""
    y = curve.mean if isinstance(curve, Band) else curve.values
    hits = np.nonzero(y >= threshold)[0]
    return float(curve.samples[hits[0]]) if len(hits) else None


def value_at(b: Band, samples: float) -> tuple[float, float, float, float] | None:
    """(samples, mean, low, high) at the band's last iteration within `samples`, else None."""
    within = np.nonzero(b.samples <= samples)[0]
    if not len(within):
        return None
    i = within[-1]
    return float(b.samples[i]), float(b.mean[i]), float(b.low[i]), float(b.high[i])


def reference_curves(folder: Path, task: str, metric: Metric = SUCCESS) -> list[Curve]:
    """RRL's own logs for `task` (ResNet34, one per seed)."""
    return [curve_of(read_csv_rows(p), metric) for p in reference_log_files(task, folder)
            if f"_{RRL_ENCODER}_" in p.name]


def matches_reference(p: CellPlan) -> bool:
    """Whether RRL's logs ran this cell's setting (task aside): encoder and observation."""
    cfg = p.cell.config
    return cfg.policy.obs_mode == RRL_OBS_MODE and cfg.encode.encoder == RRL_ENCODER


def cell_weights(p: CellPlan) -> dict[str, Any] | None:
    """The encoder weights' identity as the cell's encode key records it (None: state)."""
    return p.inputs["encode"]["inputs"]["weights"] if "encode" in p.inputs else None


def is_random(p: CellPlan) -> bool:
    return (cell_weights(p) or {}).get("kind") == "random"
