"""`rrl experiment probe NAME`: the linear probe over every encoder of an experiment and every
layer it stores, in one command, as one table ranked by R^2.

Each distinct encode output of the budget's cells is made once (render and encode are cache hits
after the first time); then the probe stage runs once per stored feature (``probe.features`` =
that feature), so a cell encoded with ``encode.layers=2,3,pre_logits`` gives three rows from one
forward pass. Rows are ranked by the mean R^2 over the task's targets; random weights are
flagged in every row, since their ranking says nothing about pretrained ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.fileio import write_text_atomic
from pipeline.runner import Runner, Stage
from pipeline.study.spec import Experiment
from pipeline.vae.resolve import resolve_trained_weights


@dataclass(frozen=True)
class ProbeRow:
    cell: str
    encoder: str
    weights: str  # "RANDOM", "pretrained <tag>", "file <sha>"
    feature: str
    width: int
    r2: dict[str, float | None]  # target -> held-out R^2
    ceiling: dict[str, float | None]
    seconds: float

    @property
    def mean_r2(self) -> float:
        values = [v for v in self.r2.values() if v is not None]
        return sum(values) / len(values) if values else float("-inf")


def probe_experiment(exp: Experiment, budget: str, base: PipelineConfig,
                     stages: dict[str, Stage], data_dir: Path,
                     log: Callable[[str], None]) -> list[ProbeRow]:
    """Probe every stored feature of every distinct encode output of the budget's cells."""
    rows: list[ProbeRow] = []
    seen: set[str] = set()
    for cell in exp.cells(budget, base):
        config = resolve_trained_weights(cell.config, data_dir)
        if config.policy.obs_mode == "state":
            continue  # a state baseline has no features to probe
        runner = Runner(config, stages, data_dir, log=log)
        key = runner.key("encode")
        if key in seen:
            continue  # another cell (a seed, a policy.features choice) of the same features
        seen.add(key)
        encoded = runner.run("encode")
        features = encoded.summary.get("features") or {"pre_logits": encoded.summary["feature_dim"]}
        for feature, width in features.items():
            probe_cfg = dataclasses.replace(config, probe=dataclasses.replace(
                config.probe, features=(feature,) if len(features) > 1 else ()))
            result = Runner(probe_cfg, stages, data_dir, log=log).run("probe").summary
            rows.append(ProbeRow(
                cell.group, str(result["encoder"]), _weights(result["weights"]), feature,
                int(width) * len(result["cameras"]),
                {t["name"]: t["features"]["r2"] for t in result["targets"]},
                {t["name"]: t["state_ceiling"]["r2"] for t in result["targets"]},
                float(result["probe_seconds"])))
            log(f"[probe] {cell.group} {feature}: mean R^2 {rows[-1].mean_r2:.3f}")
    return sorted(rows, key=lambda r: r.mean_r2, reverse=True)


def _weights(w: dict[str, Any]) -> str:
    kind = w.get("kind")
    if kind == "random":
        return "**RANDOM**"
    if kind == "file":
        return f"file {str(w.get('sha256', ''))[:12]}"
    return f"pretrained {w.get('tag', '')}"


def _r2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def probe_table(rows: list[ProbeRow], title: str, command: str) -> str:
    """The markdown page: rows ranked by mean R^2, each target's R^2, the state ceiling."""
    if not rows:
        return f"# {title}\n\nNo encoder cells to probe.\n"
    targets = list(rows[0].r2)
    head = ["rank", "cell", "encoder", "weights", "feature", "width", "mean R^2", *targets,
            "probe s"]
    lines = [f"# {title}", "", f"Made by `{command}`: one linear probe (ridge, held-out demos; "
             "pipeline/encoders/probe.py) per stored feature, ranked by the mean R^2 over the targets.",
             "RANDOM marks untrained weights: a pipeline check, not a ranking of representations.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, 1):
        cells = [str(i), r.cell, f"`{r.encoder}`", r.weights, f"`{r.feature}`", str(r.width),
                 _r2(r.mean_r2), *(_r2(r.r2[t]) for t in targets), f"{r.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    ceiling = ", ".join(f"{t} {_r2(rows[0].ceiling[t])}" for t in targets)
    lines += ["", f"State ceiling (the same probe from the rest of the state): {ceiling}.", ""]
    return "\n".join(lines)


def write_probe_table(rows: list[ProbeRow], path: Path, title: str, command: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, probe_table(rows, title, command))
    return path
