"""A cell's stage graph: its keys, the shared upstream stages, and its state on disk.

A cell is the runner's graph up to ``evaluate`` under the cell's config. Its own stages (bc, dapg,
evaluate) run in the cell's dask task; the stages upstream of ``bc`` (demos, render, encode) are
shared between cells with equal keys and run once, before the cells. A cell is identified by the
key of its last stage: equal configs, equal key, one output. A cell may end at another stage
(``Cell.target``: rad, which renders what it learns from): then it shares nothing and its own
stages are that stage's graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError, WeightsError
from pipeline.fileio import read_json_object, write_json_atomic
from pipeline.manifests import read_manifest
from pipeline.runner import MANIFEST, Progress, Runner, Stage
from pipeline.study.spec import Cell, Experiment
from pipeline.vae.resolve import resolve_trained_weights

TARGET = "evaluate"  # a cell is done when this stage is
FIRST_OWN = "bc"  # the first stage a cell runs itself; everything upstream of it is shared
RECORD = "cells.json"


@dataclass(frozen=True)
class CellPlan:
    cell: Cell
    keys: dict[str, str]  # every stage the cell needs -> its content key
    own: tuple[str, ...]  # run in the cell's task, in order
    shared: tuple[str, ...]  # run once for all cells that share their key, in order
    inputs: dict[str, dict[str, Any]]  # stage -> (code version, key inputs), for stale reasons
    stages: dict[str, Stage] = field(repr=False, compare=False, default_factory=dict)

    @property
    def key(self) -> str:
        return self.keys[self.cell.target]

    def out_dir(self, data_dir: Path, stage: str) -> Path:
        return Path(data_dir) / stage / self.keys[stage][:12]


@dataclass(frozen=True)
class CellState:
    name: str
    key: str
    state: str  # "done" | "running" | "stale" | "missing"
    detail: str = ""


def plan(exp: Experiment, cells: list[Cell], stages: dict[str, Stage],
         data_dir: Path) -> list[CellPlan]:
    """Keys of every cell; refuses two cells that are one config (they would share an output)."""
    plans = []
    for cell in cells:
        try:
            plans.append(_plan_cell(cell, stages, data_dir))
        except WeightsError as exc:  # not the file's fault: its own fix says where weights come from
            raise WeightsError(f"{exp.path}: cell {cell.name!r}: {exc}") from None
        except PipelineError as exc:
            raise exp.error(f"cell {cell.name!r}", str(exc), "correct that value in the file") from None
    seen: dict[str, str] = {}
    for p in plans:
        if p.key in seen:
            raise exp.error(f"cells {seen[p.key]!r} and {p.cell.name!r}", "they are the same config",
                            "remove one, or make them differ")
        seen[p.key] = p.cell.name
    return plans


def plan_each(exp: Experiment, cells: list[Cell], stages: dict[str, Stage],
              data_dir: Path) -> tuple[list[CellPlan], list[tuple[Cell, str]]]:
    """Like ``plan``, but a cell that cannot be planned yet (it names the encoder of a RAD cell
    that has not finished) is returned with the reason instead of failing the others."""
    plans, blocked = [], []
    for cell in cells:
        try:
            plans.append(_plan_cell(cell, stages, data_dir))
        except PipelineError as exc:
            blocked.append((cell, str(exc).splitlines()[0]))
    return plan(exp, [p.cell for p in plans], stages, data_dir), blocked


def _plan_cell(cell: Cell, stages: dict[str, Stage], data_dir: Path) -> CellPlan:
    # A cell may name an encoder trained here (vae, rad) by its key, as the CLI's WEIGHTS= does.
    cell = dataclasses.replace(cell, config=resolve_trained_weights(cell.config, data_dir))
    runner = Runner(cell.config, stages, data_dir)
    order = list(stages)
    # A cell ending at another stage (rad) learns from what it renders: nothing is shared.
    shared = _closure(runner, runner.upstream_of(FIRST_OWN)) if cell.target == TARGET else set()
    needed = _closure(runner, [cell.target])
    own = [s for s in needed if s not in shared]
    keys = {s: runner.key(s) for s in sorted(needed, key=order.index)}
    inputs = {s: {"version": runner.stage(s).version, "inputs": runner.inputs(s),
                  "upstream": runner.upstream_keys(s)} for s in keys}
    return CellPlan(cell, keys, tuple(sorted(own, key=order.index)),
                    tuple(sorted(shared, key=order.index)), inputs, stages)


def _closure(runner: Runner, names: Iterable[str]) -> set[str]:
    out: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(runner.upstream_of(name))
    return out


def shared_jobs(plans: list[CellPlan], stages: dict[str, Stage]) -> list[tuple[str, CellPlan]]:
    """(stage, a cell needing it) for each distinct shared stage output, upstream first."""
    jobs: dict[tuple[str, str], CellPlan] = {}
    for p in plans:
        for stage in p.shared:
            jobs.setdefault((stage, p.keys[stage]), p)
    order = list(stages)
    return [(stage, p) for (stage, _), p in sorted(jobs.items(), key=lambda j: order.index(j[0][0]))]


def is_done(p: CellPlan, data_dir: Path, stage: str | None = None) -> bool:
    return read_manifest(p.out_dir(data_dir, stage or p.cell.target) / MANIFEST) is not None


def cell_state(p: CellPlan, data_dir: Path, previous: dict[str, Any] | None = None) -> CellState:
    """done / running (a stage lock is held) / stale (run before with other keys) / missing.

    The runner says what each of the cell's own stages is (``Runner.stage_status``, the one
    status engine, with each stage's progress hook); a cell adds only which earlier output was
    its own (``previous``, recorded in cells.json at its last run).
    """
    data_dir = Path(data_dir)
    if is_done(p, data_dir):
        return CellState(p.cell.name, p.key, "done")
    runner = Runner(p.cell.config, p.stages, data_dir)
    states = [runner.stage_status(stage, previous=None) for stage in p.own]
    for st in states:
        if st.state == "running":
            return CellState(p.cell.name, p.key, "running", f"{st.name}, {st.reason}")
    progress = next((runner.progress(st.name) for st in reversed(states)
                     if runner.stage(st.name).progress is not None), Progress())
    old, target = (previous or {}).get("keys", {}), p.cell.target
    earlier = old.get(target)
    if earlier not in (None, p.key) and \
            read_manifest(data_dir / target / earlier[:12] / MANIFEST) is not None:
        then = f"; {progress.continues}" if progress.continues else ""
        return CellState(p.cell.name, p.key, "stale", _first_change(runner, p, old, data_dir) + then)
    started = any(st.started or st.state == "up to date" for st in states)
    done = f" ({progress.done})" if progress.done else ""
    if progress.continues:
        detail = f"{'interrupted' + done if started else 'not run'}; {progress.continues}"
    else:
        detail = f"interrupted{done}; resumes" if started else "never run"
    return CellState(p.cell.name, p.key, "missing", detail)


def _first_change(runner: Runner, p: CellPlan, old_keys: dict[str, str], data_dir: Path) -> str:
    """Why the cell's earlier output no longer counts: the first of its stages whose key changed."""
    for stage, key in p.keys.items():
        before = old_keys.get(stage)
        if before is None or before == key:
            continue
        manifest = read_manifest(Path(data_dir) / stage / before[:12] / MANIFEST)
        if manifest is None:
            return f"{stage} changed"
        return f"{stage}: {runner.stale_reason(stage, manifest)}"
    return "inputs changed"


def record_dir(data_dir: Path, exp: Experiment, budget: str) -> Path:
    return Path(data_dir) / "experiments" / exp.name / budget


def read_record(folder: Path) -> dict[str, Any]:
    """The cells' keys at their last run; {} if there is no record or it cannot be read. It only
    explains why a cell went stale, so a damaged one costs that explanation, not the status."""
    return read_json_object(folder / RECORD) or {}


def write_record(folder: Path, plans: list[CellPlan]) -> None:
    """The keys each cell had at its last run, so `status` can say why a cell became stale."""
    folder.mkdir(parents=True, exist_ok=True)
    record = read_record(folder)
    for p in plans:
        record[p.cell.name] = {"keys": p.keys, "values": dict(p.cell.values)}
    write_json_atomic(folder / RECORD, record)
