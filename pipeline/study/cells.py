"""A cell's stage graph: its keys, the shared upstream stages, and its state on disk.

A cell is the runner's graph up to ``evaluate`` under the cell's config. Its own stages (bc, dapg,
evaluate) run in the cell's dask task; the stages upstream of ``bc`` (demos, render, encode) are
shared between cells with equal keys and run once, before the cells. A cell is identified by the
key of its last stage: equal configs, equal key, one output.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.plots import read_csv_rows
from pipeline.runner import MANIFEST, Runner, Stage, diff_flat, write_json_atomic
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
                    tuple(sorted(shared, key=order.index)), inputs)


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
    return (p.out_dir(data_dir, stage or p.cell.target) / MANIFEST).exists()


def cell_state(p: CellPlan, data_dir: Path, previous: dict[str, Any] | None = None) -> CellState:
    """done / running (a stage lock is held) / stale (run before with other keys) / missing."""
    data_dir = Path(data_dir)
    if is_done(p, data_dir):
        return CellState(p.cell.name, p.key, "done")
    for stage in p.own:
        holder = lock_holder(p.out_dir(data_dir, stage).with_suffix(".lock"))
        if holder:
            return CellState(p.cell.name, p.key, "running", f"{stage}, {holder}{_progress(p, data_dir)}")
    old, target = (previous or {}).get("keys", {}), p.cell.target
    if old.get(target) not in (None, p.key) and (data_dir / target / old[target][:12] / MANIFEST).exists():
        longer = _continues(p, data_dir)
        return CellState(p.cell.name, p.key, "stale",
                         stale_reason(p, old, data_dir) + (f"; {longer}" if longer else ""))
    progress, longer = _progress(p, data_dir), _continues(p, data_dir)
    if longer:
        return CellState(p.cell.name, p.key, "missing",
                         f"{f'interrupted{progress}' if _started(p, data_dir) else 'not run'}; {longer}")
    return CellState(p.cell.name, p.key, "missing",
                     f"interrupted{progress}; resumes" if progress else "never run")


def _started(p: CellPlan, data_dir: Path) -> bool:
    from pipeline.rl.extend import progress

    return "dapg" in p.keys and progress(p.out_dir(data_dir, "dapg")) > 0


def _continues(p: CellPlan, data_dir: Path) -> str:
    """"its dapg continues the finished 100-iteration run", where it will (see rl/extend.py)."""
    from pipeline.rl.extend import continuation

    dapg = p.inputs.get("dapg")
    if dapg is None:
        return ""
    found = continuation(p.out_dir(data_dir, "dapg"), dapg["version"], dapg["inputs"],
                         dapg["upstream"])
    return f"its dapg continues the finished {found[1]}-iteration run" if found else ""


def _progress(p: CellPlan, data_dir: Path) -> str:
    """How far the cell's DAPG (or RAD) got: its log has one row per finished iteration (episode)."""
    if p.cell.target == "rad":
        log = p.out_dir(data_dir, "rad") / "log.csv"
        return f" (rad episode {len(read_csv_rows(log))})" if log.exists() else ""
    if "dapg" not in p.keys:
        return ""
    log = p.out_dir(data_dir, "dapg") / "log.csv"
    done = len(read_csv_rows(log)) if log.exists() else 0
    total = p.cell.config.dapg.iterations
    return f" (dapg iteration {done}/{total})" if done or is_done(p, data_dir, "bc") else ""


def stale_reason(p: CellPlan, old_keys: dict[str, str], data_dir: Path) -> str:
    """Why the cell's earlier output no longer counts: the first stage whose key changed."""
    for stage, key in p.keys.items():
        before = old_keys.get(stage)
        if before is None or before == key:
            continue
        path = Path(data_dir) / stage / before[:12] / MANIFEST
        if not path.exists():
            return f"{stage} changed"
        manifest = json.loads(path.read_text())
        current = p.inputs[stage]
        reasons = []
        if manifest.get("version") != current["version"]:
            reasons.append(f"{stage} code version {manifest.get('version')} -> {current['version']}")
        changes = diff_flat(manifest.get("inputs", {}), current["inputs"])
        if changes:
            reasons.append(f"{stage} config: " + ", ".join(changes))
        if reasons:
            return "; ".join(reasons)
    return "inputs changed"


def lock_holder(path: Path) -> str | None:
    """Who holds the runner's flock on ``path`` ("pid N"), without touching the lock.

    Linux lists every flock in /proc/locks by inode; trying the lock instead could make a run
    that starts at that moment fail with "already running".
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return _try_lock(path)
    for line in lines:
        parts = line.replace("->", "").split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            return f"pid {parts[4]}"
    return None


def _try_lock(path: Path) -> str | None:
    import fcntl

    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def record_dir(data_dir: Path, exp: Experiment, budget: str) -> Path:
    return Path(data_dir) / "experiments" / exp.name / budget


def read_record(folder: Path) -> dict[str, Any]:
    path = folder / RECORD
    return dict(json.loads(path.read_text())) if path.exists() else {}


def write_record(folder: Path, plans: list[CellPlan]) -> None:
    """The keys each cell had at its last run, so `status` can say why a cell became stale."""
    folder.mkdir(parents=True, exist_ok=True)
    record = read_record(folder)
    for p in plans:
        record[p.cell.name] = {"keys": p.keys, "values": dict(p.cell.values)}
    write_json_atomic(folder / RECORD, record)
