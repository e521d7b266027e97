"""`rrl experiment run|status NAME` and `rrl report NAME...`: the study layer's commands.

An experiment's cells start from the config the global options give (``SCHEDULER=``,
``STORE=``, ``SET=``...), then the file's values; `status` and `report` must be given the same
options to find the same cells. ``NAME`` is ``experiments/NAME.toml`` or a path to a file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.outputs import REFERENCE_LOGS
from pipeline.study.cells import cell_state, plan_each, read_record, record_dir
from pipeline.study.execute import run_experiment
from pipeline.study.report import write_report
from pipeline.study.spec import find_experiment, load_experiment
from pipeline.study.zoo_probe import probe_experiment, write_probe_table
from stages import STAGES
from stages.options import BY_NAME, overrides

if TYPE_CHECKING:
    from pipeline.study.spec import Experiment

study_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Experiment grids: run their cells on dask, list their state.")
DEFAULT_BUDGET = "smoke"  # the budget that runs on a laptop; `paper` is for a GPU machine
BudgetOption = Annotated[str, typer.Option(envvar="RRL_BUDGET", help="named budget in the file")]


def global_config(ctx: typer.Context) -> tuple[PipelineConfig, Path]:
    """The global options' config and data folder (set by `rrl`'s callback on the root)."""
    params = ctx.find_root().params
    values = {k: params.get(k) for k in BY_NAME}
    config = PipelineConfig().with_overrides(overrides(values, params.get("set_") or []))
    return config, Path(params.get("data") or "data")


def _load(name: str) -> Experiment:
    return load_experiment(find_experiment(name))


@study_app.command("run")
def run(ctx: typer.Context, name: Annotated[str, typer.Argument(help="experiment name or file")],
        budget: BudgetOption = DEFAULT_BUDGET,
        cell: Annotated[list[str] | None, typer.Option(
            help="run only the cell of this name (repeatable); default: every cell")] = None) -> None:
    """Run every cell not yet done (shared stages first, then the cells on dask)."""
    started = time.perf_counter()
    base, data = global_config(ctx)
    outcomes = run_experiment(_load(name), budget, base, STAGES, data,
                              log=lambda m: typer.echo(m, err=True), only=cell or ())
    for o in outcomes:
        took = f" in {o.seconds:.0f} s" if o.status == "done" else ""
        typer.echo(f"{o.name:<36} {o.key[:12]}  {o.status}{took}")
    failed = [o for o in outcomes if o.status == "failed"]
    typer.echo(f"{name} ({budget}): {len(outcomes) - len(failed)}/{len(outcomes)} cells done "
               f"in {time.perf_counter() - started:.1f} s")
    if failed:
        raise PipelineError(f"{len(failed)} cell(s) failed: " + "; ".join(
            f"{o.name}: {o.detail}" for o in failed) + ". Fix: see each cell's log; re-running "
            "the experiment redoes only unfinished cells")


@study_app.command("status")
def status(ctx: typer.Context, name: Annotated[str, typer.Argument(help="experiment name or file")],
           budget: BudgetOption = DEFAULT_BUDGET) -> None:
    """Each cell: done / running (its lock is held) / stale (why) / missing, with its key."""
    base, data = global_config(ctx)
    exp = _load(name)
    record = read_record(record_dir(data, exp, budget))
    plans, blocked = plan_each(exp, exp.cells(budget, base), STAGES, data)
    for p in plans:
        st = cell_state(p, data, record.get(p.cell.name))
        typer.echo(f"{st.name:<36} {st.key[:12]}  {st.state}" + (f": {st.detail}" if st.detail else ""))
    for cell, reason in blocked:  # e.g. the fixed RAD encoder before its RAD cell finished
        typer.echo(f"{cell.name:<36} {'-' * 12}  waiting: {reason}")


@study_app.command("probe")
def probe(ctx: typer.Context, name: Annotated[str, typer.Argument(help="experiment name or file")],
          budget: BudgetOption = DEFAULT_BUDGET,
          out: Annotated[Path | None, typer.Option(
              help="markdown table path; default DATA/experiments/NAME/BUDGET/probe.md")] = None
          ) -> None:
    """Linear probe of every encoder cell and every layer it stores, ranked by R^2."""
    base, data = global_config(ctx)
    exp = _load(name)
    rows = probe_experiment(exp, budget, base, STAGES, data, log=lambda m: typer.echo(m, err=True))
    path = out or data / "experiments" / exp.name / budget / "probe.md"
    write_probe_table(rows, path, f"Linear probe: {exp.title} ({budget})",
                      f"rrl experiment probe {name} --budget {budget}")
    for i, r in enumerate(rows, 1):
        typer.echo(f"{i:>3}  {r.mean_r2:7.3f}  {r.cell:<24} {r.feature:<16} {r.weights}")
    typer.echo(f"table: {path}")


def report(ctx: typer.Context,
           names: Annotated[list[str], typer.Argument(help="experiment names or files")],
           budget: BudgetOption = DEFAULT_BUDGET,
           out: Annotated[Path | None, typer.Option(
               help="output path without suffix (writes .png and .md); default "
                    "DATA/experiments/NAME/BUDGET/report")] = None) -> None:
    """Learning curves (one panel per experiment and task) and tables, from the cached logs."""
    base, data = global_config(ctx)
    exps = [_load(n) for n in names]
    prefix = out or data / "experiments" / "+".join(e.name for e in exps) / budget / "report"
    png, md = write_report(exps, budget, base, STAGES, data, prefix, REFERENCE_LOGS)
    typer.echo(f"report: {png}\ntable:  {md}")


def register(app: typer.Typer) -> None:
    """Add `experiment run|status` and `report` to the `rrl` app."""
    app.add_typer(study_app, name="experiment")
    app.command("report")(report)
