"""Running an experiment: the shared stages once in this process, then the cells on dask.

Shared stages (one render per task, one encode per encoder) run here first, one after the other:
encode starts a dask cluster of its own, and two of them would fight over the cores. The cells
then run as tasks on one client, each asking for a ``CELL`` resource that every worker has one
of, so a worker runs one cell at a time (a cell's sampler starts processes of its own). A cell is
``Runner.run("evaluate")`` (or ``"rad"``): a finished cell is a cache hit, an interrupted one
resumes from its DAPG (RAD) checkpoint. Nothing here decides an output: the runner's keys do.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, PipelineError, StageLockedError, unknown_name
from pipeline.locks import lock_holder, stage_lock
from pipeline.runner import Runner, Stage, StageResult
from pipeline.study.cells import (
    TARGET,
    CellPlan,
    is_done,
    plan,
    record_dir,
    shared_jobs,
    write_record,
)
from pipeline.study.spec import Experiment

CELL_RESOURCE = "CELL"
SAMPLER_PROCESSES = 2  # worker processes of a cell's rollout sampler (make_sampler's default)
LOCK_POLL_S = 5.0


@dataclass(frozen=True)
class CellOutcome:
    name: str
    key: str
    status: str  # "cache hit" | "done" | "failed"
    seconds: float
    detail: str = ""  # the evaluate stage's description, or the error


def cell_resources(config: PipelineConfig) -> dict[str, float]:
    """What one cell asks of a worker.

    The hook for devices: once a config can ask for a GPU, a cell that does adds ``{"GPU": 1}``
    here, and the cluster gets one worker per GPU declaring ``GPU=1`` (see ``get_client``).
    """
    return {CELL_RESOURCE: 1}


def default_parallel() -> int:
    """Cells at once on a local cluster: each keeps about SAMPLER_PROCESSES cores busy."""
    return max(1, (os.cpu_count() or 1) // SAMPLER_PROCESSES)


def run_cell(config: PipelineConfig, stages: dict[str, Stage], data_dir: str,
             log_path: str, target: str = TARGET) -> dict[str, Any]:
    """One cell, in a dask worker: its stages up to ``target`` (evaluate, or rad), logged to its
    own file."""
    if multiprocessing.current_process().daemon:
        raise PipelineError(
            "this dask worker is a daemonic process, so the cell's rollout sampler cannot start "
            "its worker processes. Fix: start the workers with DASK_DISTRIBUTED__WORKER__DAEMON=False")
    started = time.perf_counter()
    with open(log_path, "a") as fh:

        def log(msg: str) -> None:
            fh.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} {msg}\n")
            fh.flush()

        runner = Runner(config, stages, data_dir, log=log)
        try:
            result = runner.run(target)
        except BaseException:
            log("failed:\n" + traceback.format_exc())
            raise
        log(f"cell finished in {time.perf_counter() - started:.1f} s")
    return {"key": result.key, "cache_hit": result.cache_hit,
            "seconds": time.perf_counter() - started, "detail": stages[target].describe(result)}


def run_shared(plans: list[CellPlan], stages: dict[str, Stage], data_dir: Path,
               log: Callable[[str], None]) -> None:
    """Each distinct upstream output (render per task, encode per encoder) once, upstream first."""
    for stage, p in shared_jobs(plans, stages):
        started = time.perf_counter()
        result = _run_waiting(Runner(p.cell.config, stages, data_dir, log=log), stage, log)
        verb = "cache hit" if result.cache_hit else f"done in {time.perf_counter() - started:.1f} s"
        log(f"shared {stage} {result.key[:12]}: {verb}")


def _run_waiting(runner: Runner, stage: str, log: Callable[[str], None]) -> StageResult:
    """Run a shared stage; if another process holds its lock, wait for that run, then reuse it.

    A shared output is often in the making elsewhere (another experiment, or `make encode` of
    the same encoder): failing would throw away a cache hit a few minutes away.
    """
    lock = runner.out_dir(stage).with_suffix(".lock")
    while True:
        try:
            return runner.run(stage)
        except StageLockedError as exc:
            log(f"shared {stage}: {exc}; waiting for it (Ctrl-C stops waiting)")
            while lock_holder(lock):
                time.sleep(LOCK_POLL_S)


def run_experiment(exp: Experiment, budget: str, base: PipelineConfig, stages: dict[str, Stage],
                   data_dir: Path, log: Callable[[str], None] = print,
                   only: Sequence[str] = ()) -> list[CellOutcome]:
    """Run every cell not yet done (of ``only``, the cells so named, if given); returns one
    outcome per cell, in the file's order.

    Cells that end at a stage of their own (rad) run first: another cell may name their output
    by its key (the fixed RAD encoder), which resolves only once that output exists.
    """
    data_dir = Path(data_dir).resolve()  # workers may not share this process's directory
    cells = exp.cells(budget, base)
    unknown = [name for name in only if name not in {c.name for c in cells}]
    if unknown:
        raise unknown_name(f"cell of {exp.path} (budget {budget})", unknown[0],
                           [c.name for c in cells])
    cells = [c for c in cells if not only or c.name in only]
    folder = record_dir(data_dir, exp, budget)
    with stage_lock(folder / "run.lock", f"experiment {exp.name} (budget {budget})"):
        outcomes: dict[str, CellOutcome] = {}
        early = [c for c in cells if c.target != TARGET]
        if early:
            outcomes.update(_run_plans(exp, budget, plan(exp, early, stages, data_dir), stages,
                                       data_dir, folder, log))
        plans = plan(exp, cells, stages, data_dir)
        write_record(folder, plans)
        late = [p for p in plans if p.cell.target == TARGET]
        outcomes.update(_run_plans(exp, budget, late, stages, data_dir, folder, log))
    return [outcomes[p.cell.name] for p in plans]


def _run_plans(exp: Experiment, budget: str, plans: list[CellPlan], stages: dict[str, Stage],
               data_dir: Path, folder: Path, log: Callable[[str], None]) -> dict[str, CellOutcome]:
    """The shared stages of ``plans``, then every cell of them not yet done, on dask."""
    run_shared(plans, stages, data_dir, log)
    outcomes = {p.cell.name: CellOutcome(p.cell.name, p.key, "cache hit", 0.0)
                for p in plans if is_done(p, data_dir)}
    pending = [p for p in plans if p.cell.name not in outcomes]
    log(f"{exp.name} ({budget}): {len(plans)} cells, {len(outcomes)} done, "
        f"{len(pending)} to run")
    if pending:
        parallel = exp.budget(budget).parallel or default_parallel()
        for outcome in _run_on_dask(pending, stages, data_dir, folder / "logs", parallel, log):
            outcomes[outcome.name] = outcome
    return outcomes


def _run_on_dask(pending: list[CellPlan], stages: dict[str, Stage], data_dir: Path, logs: Path,
                 parallel: int, log: Callable[[str], None]) -> list[CellOutcome]:
    from distributed import as_completed

    from pipeline.distributed import get_client

    logs.mkdir(parents=True, exist_ok=True)
    workers = min(parallel, len(pending))
    threads = max(1, (os.cpu_count() or 1) // workers)
    scheduler = pending[0].cell.config.encode.scheduler
    out = []
    with get_client(scheduler, workers, threads, resources={CELL_RESOURCE: 1},
                    child_processes=True) as client:
        _require_resource(client, scheduler)
        futures = {}
        for p in pending:
            log_path = logs / f"{p.cell.slug}.log"
            log(f"cell {p.cell.name}: queued, key {p.key[:12]}, log {log_path}")
            fut = client.submit(run_cell, p.cell.config, stages, str(data_dir), str(log_path),
                                p.cell.target, resources=cell_resources(p.cell.config), pure=False)
            futures[fut] = p
        for fut in as_completed(list(futures)):
            p = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:
                out.append(CellOutcome(p.cell.name, p.key, "failed", 0.0, f"{type(exc).__name__}: {exc}"))
                log(f"cell {p.cell.name}: FAILED: {exc} (log {logs / (p.cell.slug + '.log')})")
                continue
            out.append(CellOutcome(p.cell.name, p.key, "cache hit" if res["cache_hit"] else "done",
                                   res["seconds"], res["detail"]))
            log(f"cell {p.cell.name}: done in {res['seconds']:.1f} s: {res['detail'].splitlines()[0]}")
    return out


def _require_resource(client: Any, scheduler: str | None) -> None:
    workers = client.scheduler_info().get("workers", {})
    if not any(w.get("resources", {}).get(CELL_RESOURCE) for w in workers.values()):
        raise ConfigError(
            f"no worker of the dask cluster at {scheduler} offers a {CELL_RESOURCE} resource, so no "
            f"cell could ever start. Fix: start workers with `dask worker {scheduler} --resources "
            f"{CELL_RESOURCE}=1` (one per cell to run at once)")
