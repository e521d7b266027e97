"""The report of one or more experiments: a PNG (a panel per experiment and task) and a table.

A pure function of the cells' cached logs: nothing is run, so it rebuilds in seconds, and a
report made while an experiment runs shows the cells finished so far, and a group none of whose
seeds has finished as far as its logs go, labelled unfinished.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.fileio import write_text_atomic
from pipeline.outputs import weights_label
from pipeline.runner import Stage
from pipeline.study.cells import CellPlan, plan_each
from pipeline.study.curves import (
    Band,
    CellRun,
    Curve,
    Metric,
    band,
    cell_weights,
    collect,
    companion_metric,
    curve_of,
    is_random,
    matches_reference,
    metric_for,
    planned_iterations,
    reference_curves,
    samples_to,
    value_at,
)
from pipeline.study.figure import Panel, draw_panels
from pipeline.study.spec import Cell, Experiment

CURVE_NOTE = (
    "Curves: success rate (%) of the trajectories sampled at each DAPG iteration (stochastic "
    "policy), the `success_rate` column of RRL's logs, against the environment samples used so "
    "far; line = mean over seeds, band = min-max over seeds, on the iterations all seeds reached. "
    "Unfinished seeds are left out, except in a group none of whose seeds has finished: it is drawn "
    "as far as its logs go and labelled unfinished. RRL's own logs (ResNet34, ImageNet weights, 3 seeds) are drawn "
    "where the task, encoder and observation match.")
COMPANION_NOTE = (
    "Beside each success panel, the mean return of the same sampled trajectories "
    "(`stoc_pol_mean`): a run too short to succeed still shows there whether it improves.")
RAD_NOTE = (
    "RAD cells learn from pixels by SAC (the `rad` stage): a row of their log is a training "
    "episode, drawn at its return (sampled actions), so their 'iterations' are episodes; their "
    "evaluation is the mean-action return over `rad.eval_episodes` seeded episodes. Samples are "
    "env steps after action repeat for every cell; DMControl-100k counts control steps, the "
    "samples times the task's action repeat (cartpole 8, finger and walker 2, cheetah 4).")
RETURN_NOTE = (
    "DeepMind Control tasks define no success: their panels and tables show the mean return of "
    "the sampled trajectories (`stoc_pol_mean`, at most 1000 per episode) instead, and the "
    "evaluation columns the mean-action return.")


def write_report(experiments: Sequence[Experiment], budget: str, base: PipelineConfig,
                 stages: dict[str, Stage], data_dir: Path, prefix: Path,
                 reference_dir: Path) -> tuple[Path, Path]:
    """Write ``prefix.png`` and ``prefix.md``; returns their paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, md = prefix.with_suffix(".png"), prefix.with_suffix(".md")
    panels, sections, random, returns, companion, rad = [], [], False, False, False, False
    for exp in experiments:
        plans, blocked = plan_each(exp, exp.cells(budget, base), stages, data_dir)
        runs = [collect(p, data_dir) for p in plans]
        rad = rad or any(p.cell.target == "rad" for p in plans)
        for task in dict.fromkeys(r.plan.cell.config.task for r in runs):
            in_task = [r for r in runs if r.plan.cell.config.task == task]
            panels.append(_panel(exp, task, in_task, reference_dir, metric_for(task)))
            extra = companion_metric(task)
            if extra is not None and any(r.rows for r in in_task):
                panels.append(_panel(exp, task, in_task, reference_dir, extra))
                companion = True
            returns = returns or metric_for(task).name == "return"
        sections += _section(exp, runs, reference_dir, blocked)
        random = random or any(is_random(r.plan) for r in runs)
    note = "RANDOM encoder weights (dashed): a pipeline check, not ImageNet features"
    draw_panels(panels, png, f"budget {budget!r}", note if random else "")
    lines = [f"# Report: {', '.join(e.name for e in experiments)} (budget `{budget}`)", "",
             f"![learning curves]({png.name})", "", CURVE_NOTE, ""]
    if returns:
        lines += [RETURN_NOTE, ""]
    if rad:
        lines += [RAD_NOTE, ""]
    if companion:
        lines += [COMPANION_NOTE, ""]
    if random:
        lines += [f"**{note}** (cells marked RANDOM).", ""]
    lines += sections
    write_text_atomic(md, "\n".join(lines).rstrip() + "\n")
    return png, md


def _panel(exp: Experiment, task: str, runs: list[CellRun], reference_dir: Path,
           metric: Metric) -> Panel:
    groups: dict[str, list[CellRun]] = {}
    for r in runs:
        groups.setdefault(r.plan.cell.group, []).append(r)
    curves = {}
    main = metric == metric_for(task)
    for group, members in groups.items():
        done, partial = _curves(members, None if main else metric)
        tag = " [RANDOM weights]" if is_random(members[0].plan) else ""
        if done:
            curves[f"{group} ({len(done)} seed{'s' * (len(done) > 1)}){tag}"] = band(done)
        elif partial:
            curves[f"{group} ({_unfinished(members, partial)}){tag}"] = band(partial)
    matched = any(matches_reference(r.plan) for r in runs)
    refs = reference_curves(reference_dir, task, metric) if matched else []
    title = exp.title if task in exp.title.split() else f"{exp.title}: {task}"
    title = title if main else f"the same runs: {metric.axis}"
    return Panel(title, curves, band(refs) if refs else None, metric)


def _section(exp: Experiment, runs: list[CellRun], reference_dir: Path,
             blocked: Sequence[tuple[Cell, str]] = ()) -> list[str]:
    lines = [f"## {exp.name}: {exp.title}", ""]
    if exp.description:
        lines += [exp.description, ""]
    name, labels = _header(runs)
    to = " | ".join(f"samples to {label}" for label in labels)
    lines += [f"| group | seeds done | final sampled {name}, mean (min-max) | {to} |",
              "| " + " | ".join(["---"] * (3 + len(labels))) + " |"]
    groups: dict[str, list[CellRun]] = {}
    for r in runs:
        groups.setdefault(r.plan.cell.group, []).append(r)
    for group, members in groups.items():
        done, partial = _curves(members)
        if not done and not partial:
            lines.append(f"| {group} | 0/{len(members)} | - | " + " | ".join(["-"] * len(labels)) + " |")
            continue
        drawn = done or partial
        common = min(len(c.values) for c in drawn)  # as band(): where every seed has got to
        finals = [c.values[common - 1] for c in drawn]
        b = band(drawn)
        metric = metric_for(members[0].plan.cell.config.task)  # a group is one task
        seeds = (f"{len(done)}/{len(members)}" if done
                 else f"0/{len(members)} ({_unfinished(members, partial)})")
        lines.append(f"| {group} | {seeds} | "
                     f"{metric.format(sum(finals) / len(finals))} "
                     f"({min(finals):.1f}-{max(finals):.1f}) | "
                     + " | ".join(_samples(samples_to(b, t)) for t in metric.thresholds) + " |")
    for task in dict.fromkeys(r.plan.cell.config.task for r in runs):
        if any(matches_reference(r.plan) for r in runs if r.plan.cell.config.task == task):
            refs = reference_curves(reference_dir, task)
            if refs:
                b, metric = band(refs), metric_for(task)
                lines.append(f"| RRL's logs ({task}, {len(refs)} seeds) | {len(refs)} | "
                             f"{b.mean[-1]:.1f}% ({b.low[-1]:.1f}-{b.high[-1]:.1f}) | "
                             + " | ".join(_samples(samples_to(b, t)) for t in metric.thresholds) + " |")
                lines += _reference_at_budget(b, [r for r in runs if r.plan.cell.config.task == task],
                                               len(labels))
    lines += ["", f"| cell | state | encoder | weights | obs | iterations | samples | sampled "
              f"{name} (last iteration) | eval {name} (last iteration) | evaluate "
              f"stage | {to} | wall time | key (evaluate) |",
              "| " + " | ".join(["---"] * (12 + len(labels))) + " |"]
    lines += [_cell_row(r) for r in runs]
    lines += [f"| {cell.name} | not planned: {reason} |" + " - |" * (10 + len(labels))
              for cell, reason in blocked]
    commits = sorted({r.commit[:10] for r in runs if r.commit})
    if commits:
        shown = ", ".join(f"`{c}`" for c in commits)
        lines += ["", f"The finished cells' manifests record git commit {shown} (HEAD when each "
                  "stage finished)."]
    lines += ["", "Keys: `data/evaluate/<key>/` (RAD cells: `data/rad/<key>/`, with its logs); the "
              "cell's DAPG logs are in `data/dapg/<dapg key>/` "
              "(`rrl experiment status` lists them). Wall time: bc + DAPG iterations (from its log, "
              "which survives resumes) + evaluate.", ""]
    return lines


def _curves(members: list[CellRun], metric: Metric | None = None) -> tuple[list[Curve], list[Curve]]:
    """A group's curves, of the task's metric or else of `metric`: of its finished seeds, and
    of those still running."""
    def curve(r: CellRun) -> Curve | None:
        return r.curve if metric is None else curve_of(list(r.rows), metric) if r.rows else None

    done = [c for r in members if r.state == "done" and (c := curve(r)) is not None]
    partial = [c for r in members if r.state == "partial" and (c := curve(r)) is not None]
    return done, partial


def _reference_at_budget(b: Band, runs: list[CellRun], columns: int) -> list[str]:
    """RRL's logs at this experiment's sample budget: a fair yardstick for a short run."""
    budget = max((float(r.curve.samples[-1]) for r in runs if r.curve is not None), default=0.0)
    at = value_at(b, budget) if budget else None
    if at is None or at[0] >= float(b.samples[-1]):
        return []
    samples, mean, low, high = at
    return [f"| RRL's logs at this budget ({int(samples):,} samples) | {b.seeds} | "
            f"{mean:.1f}% ({low:.1f}-{high:.1f}) | " + " | ".join(["-"] * columns) + " |"]


def _unfinished(members: list[CellRun], partial: list[Curve]) -> str:
    """"unfinished, 45/100 iterations": as far as every unfinished seed got, which is as far as
    their band is drawn."""
    total = planned_iterations(members[0].plan)
    unit = "episodes" if members[0].plan.cell.target == "rad" else "iterations"
    return f"unfinished, {min(len(c.values) for c in partial)}/{total} {unit}"


def _header(runs: list[CellRun]) -> tuple[str, list[str]]:
    """The tables' metric name and threshold labels; both, joined, where families mix."""
    metrics: dict[str, Metric] = {}
    for r in runs:
        m = metric_for(r.plan.cell.config.task)
        metrics[m.name] = m
    name = " or ".join(metrics)
    count = len(next(iter(metrics.values())).thresholds)
    labels = [" or ".join(m.threshold_labels()[i] for m in metrics.values()) for i in range(count)]
    return name, labels


def _cell_row(r: CellRun) -> str:
    p: CellPlan = r.plan
    cfg = p.cell.config
    metric = metric_for(cfg.task)
    vision, rad = "encode" in p.keys, p.cell.target == "rad"
    encoder = f"{cfg.encode.encoder} ({cfg.encode.precision})" if vision else (
        "RAD's conv encoder" if rad else "-")
    weights = "trained by RAD (SAC + crop)" if rad else weights_label(cell_weights(p))
    weights = f"**{weights}**" if is_random(p) else weights
    c = r.curve
    state = r.state if r.state != "partial" or c is None else (
        f"partial ({len(c.values)}/{planned_iterations(p)})")
    ev = r.evaluate
    if rad and ev is not None:  # the rad summary's last evaluation, in the evaluate columns
        ev = {metric.summary_field: ev["final_eval_score"], "episodes": ev["eval_episodes"]}
    cells = [
        p.cell.name, state, encoder, weights,
        f"pixels ({cfg.rad.frame_stack} frames)" if rad else cfg.policy.obs_mode,
        str(len(c.values)) if c is not None else "0",
        f"{int(c.samples[-1]):,}" if c is not None else "0",
        metric.format(c.values[-1]) if c is not None else "-",
        metric.format(r.eval_value) if r.eval_value is not None else "-",
        f"{metric.format(ev[metric.summary_field])} of {ev['episodes']}" if ev else "-",
        *(_samples(samples_to(c, t)) if c is not None else "-" for t in metric.thresholds),
        _duration(r.seconds),
        f"`{p.key[:12]}` (dapg `{p.keys['dapg'][:12]}`)" if "dapg" in p.keys else f"`{p.key[:12]}`",
    ]
    return "| " + " | ".join(cells) + " |"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _samples(n: float | None) -> str:
    return f"{int(n):,}" if n is not None else "not reached"
