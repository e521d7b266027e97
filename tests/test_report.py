"""The report is a function of the cells' cached logs: written here as the stages write them (CSV
logs, manifests), so the numbers it must print are known."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import PipelineConfig
from pipeline.fileio import write_csv_atomic
from pipeline.outputs import EVAL_LOG, LOG, REFERENCE_LOGS
from pipeline.rl.trainer import EVAL_COLUMNS, LOG_COLUMNS
from pipeline.runner import MANIFEST
from pipeline.study.cells import CellPlan, plan
from pipeline.study.curves import Curve, band, reference_curves, samples_to
from pipeline.study.report import write_report
from pipeline.study.spec import load_experiment
from stages import STAGES

EXPERIMENT = """
title = "encoders"
[base]
"env.task" = "door"
"encode.weights" = "random"
[grid]
"encode.encoder" = ["resnet34", "resnet18"]
[[cells]]
name = "DAPG (state)"
"policy.obs_mode" = "state"
[budgets.smoke]
seeds = [0, 1, 2]
"dapg.iterations" = 4
"dapg.trajectories" = 10
"""
SAMPLES = 1000  # per iteration
# Sampled success per iteration, by (group, seed); resnet18 seed 2 stopped after 2 iterations.
SUCCESS = {
    ("encoder=resnet34", 0): [0, 40, 60, 95], ("encoder=resnet34", 1): [0, 20, 40, 80],
    ("encoder=resnet34", 2): [10, 30, 50, 90], ("encoder=resnet18", 0): [0, 0, 10, 20],
    ("encoder=resnet18", 1): [0, 0, 0, 0], ("encoder=resnet18", 2): [0, 0],
    ("DAPG (state)", 0): [50, 100, 100, 100], ("DAPG (state)", 1): [0, 50, 100, 100],
    ("DAPG (state)", 2): [0, 0, 50, 100],
}


def rrl_door_logs() -> list[Curve]:
    """RRL's three door logs; without ../shared beside the checkout the test says so and skips
    (never a silent pass without the comparison)."""
    if not REFERENCE_LOGS.is_dir():
        pytest.skip(f"RRL's reference logs are not at {REFERENCE_LOGS}")
    refs = reference_curves(REFERENCE_LOGS, "door")
    assert len(refs) == 3
    return refs


def fake_cell(data: Path, p: CellPlan, success: list[float], finished: bool) -> None:
    """What bc, dapg and evaluate leave behind: dapg's log.csv and eval.csv, and manifests."""
    dapg = p.out_dir(data, "dapg")
    dapg.mkdir(parents=True)
    # The trainer's own columns and writer: a renamed column fails here, not in a real run.
    rows = [{**dict.fromkeys(LOG_COLUMNS, 0.0), "iteration": i, "success_rate": s,
             "stoc_pol_mean": 10 * s - 50, "num_samples": SAMPLES, "time_sampling": 9,
             "time_vpg": 0.5, "time_npg": 0.3, "time_VF": 0.2} for i, s in enumerate(success)]
    write_csv_atomic(dapg / LOG, LOG_COLUMNS, rows)
    write_csv_atomic(dapg / EVAL_LOG, EVAL_COLUMNS, [
        {"iteration": i, "eval_score": 0, "eval_success_rate": 25.0, "time_eval": 2}
        for i in range(len(success))])
    if finished:
        for stage, seconds in (("bc", 3), ("dapg", 1), ("evaluate", 5)):
            p.out_dir(data, stage).mkdir(parents=True, exist_ok=True)
            summary = {"success_rate": 70.0, "episodes": 10} if stage == "evaluate" else {}
            (p.out_dir(data, stage) / MANIFEST).write_text(json.dumps(
                {"key": p.keys[stage], "seconds": seconds, "summary": summary}))


def test_report_tables_and_figure_from_cached_logs(tmp_path: Path) -> None:
    path = tmp_path / "encoders.toml"
    path.write_text(EXPERIMENT)
    exp = load_experiment(path)
    data = tmp_path / "data"
    plans = plan(exp, exp.cells("smoke"), STAGES, data)
    for p in plans:
        seed = p.cell.config.policy.seed
        fake_cell(data, p, SUCCESS[(p.cell.group, seed)], finished=len(SUCCESS[(p.cell.group, seed)]) == 4)
    png, md = write_report([exp], "smoke", PipelineConfig(), STAGES, data, tmp_path / "out/report",
                           REFERENCE_LOGS)
    assert png.stat().st_size > 10_000 and md.name == "report.md"
    text = md.read_text()
    assert "![learning curves](report.png)" in text
    assert "Beside each success panel, the mean return" in text  # door: a return panel too
    # Group rows: mean of the final sampled success and samples to 10% / 50% / 90% of the mean
    # curve. resnet34's mean curve: 3.3, 30, 50, 88.3 -> 10% at 2,000, 50% at 3,000, 90% never.
    assert "| encoder=resnet34 | 3/3 | 88.3% (80.0-95.0) | 2,000 | 3,000 | not reached |" in text
    # resnet18: the unfinished seed is left out of the curve and counted as not done.
    assert "| encoder=resnet18 | 2/3 | 10.0% (0.0-20.0) | 4,000 | not reached | not reached |" in text
    # state: mean 16.7, 50, 83.3, 100
    assert "| DAPG (state) | 3/3 | 100.0% (100.0-100.0) | 1,000 | 2,000 | 4,000 |" in text
    # Cell rows: key, random weights flagged, wall time = bc + DAPG iterations + evals + evaluate.
    row = next(line for line in text.splitlines() if line.startswith("| encoder=resnet34 seed=0 |"))
    assert "**RANDOM weights" in row and "95.0%" in row and "25.0%" in row and "70.0% of 10" in row
    assert f"`{plans[0].key[:12]}`" in row and "| 2,000 | 3,000 | 4,000 |" in row
    assert f"{3 + 4 * 10 + 4 * 2 + 5} s" in row
    partial = next(line for line in text.splitlines() if line.startswith("| encoder=resnet18 seed=2 |"))
    assert "partial (2/4)" in partial
    state = next(line for line in text.splitlines() if line.startswith("| DAPG (state) seed=0 |"))
    assert "none (state observations)" in state and "RANDOM" not in state
    # RRL's logs are drawn and tabled because a resnet34 vision+proprio door cell is present.
    refs = rrl_door_logs()
    assert f"| RRL's logs (door, {len(refs)} seeds) |" in text
    # These cells' 4,000 samples come before RRL's first logged iteration (40,000): no row.
    assert "RRL's logs at this budget" not in text
    # A pure function of the logs: the same files give the same table.
    write_report([exp], "smoke", PipelineConfig(), STAGES, data, tmp_path / "again/report", REFERENCE_LOGS)
    assert (tmp_path / "again/report.md").read_text() == text


def test_samples_to_threshold_and_reference_axis() -> None:
    from pipeline.study.curves import Curve

    curve = Curve(np.array([100.0, 200.0, 300.0]), np.array([10.0, 50.0, 49.0]))
    assert samples_to(curve, 50) == 200.0 and samples_to(curve, 90) is None
    b = band([curve, Curve(np.array([100.0, 200.0]), np.array([30.0, 70.0]))])
    assert b.seeds == 2 and list(b.mean) == [20.0, 60.0] and list(b.low) == [10.0, 50.0]
    refs = rrl_door_logs()  # RRL's x axis: iteration x its samples per iteration (40,000)
    assert refs[0].samples[0] == 40_000 and refs[0].samples[1] == 80_000


def _report_of_resnet34_runs(tmp_path: Path, seeds: str,
                             rows: Callable[[CellPlan], tuple[list[float], bool] | None]) -> str:
    """The report of EXPERIMENT's resnet34 group (and state cells) over ``seeds``, each cell's
    log faked as ``rows(plan)`` gives it: (success per iteration, finished), or None for none."""
    path = tmp_path / "running.toml"
    path.write_text(EXPERIMENT.replace('["resnet34", "resnet18"]', '["resnet34"]')
                    .replace("seeds = [0, 1, 2]", f"seeds = {seeds}"))
    exp = load_experiment(path)
    data = tmp_path / "data"
    for p in plan(exp, exp.cells("smoke"), STAGES, data):
        if (faked := rows(p)) is not None:
            fake_cell(data, p, faked[0], finished=faked[1])
    _, md = write_report([exp], "smoke", PipelineConfig(), STAGES, data, tmp_path / "r", REFERENCE_LOGS)
    return md.read_text()


def test_a_group_with_no_finished_seed_is_drawn_as_far_as_it_got(tmp_path: Path) -> None:
    def rows(p: CellPlan) -> tuple[list[float], bool]:
        state = p.cell.config.policy.obs_mode == "state"
        return ([0, 50, 100, 100], True) if state else ([0, 10, 60], False)

    text = _report_of_resnet34_runs(tmp_path, "[0]", rows)
    # The running cell's curve and final value so far, said to be unfinished.
    # (A grid of one value is the group "base"; samples count from the first iteration's 1,000.)
    assert "| base | 0/1 (unfinished, 3/4 iterations) | 60.0% (60.0-60.0) | 2,000 | 3,000 |" in text
    assert "| DAPG (state) | 1/1 | 100.0% (100.0-100.0) | 2,000 | 2,000 | 3,000 |" in text


def test_unfinished_seeds_are_tabled_where_all_of_them_got(tmp_path: Path) -> None:
    def rows(p: CellPlan) -> tuple[list[float], bool] | None:  # seed 0 at iteration 3, seed 1 at 2
        if p.cell.config.policy.obs_mode == "state":
            return None
        return ([0, 10, 60] if p.cell.config.policy.seed == 0 else [0, 20]), False

    text = _report_of_resnet34_runs(tmp_path, "[0, 1]", rows)
    # Both seeds' second iteration (10 and 20), as the band is drawn: not seed 0's third.
    assert "| base | 0/2 (unfinished, 2/4 iterations) | 15.0% (10.0-20.0) |" in text


def test_reference_value_at_a_budget() -> None:
    from pipeline.study.curves import Curve, value_at

    b = band([Curve(np.array([100.0, 200.0, 300.0]), np.array([10.0, 50.0, 49.0])),
              Curve(np.array([100.0, 200.0, 300.0]), np.array([30.0, 70.0, 51.0]))])
    assert value_at(b, 250) == (200.0, 60.0, 50.0, 70.0)
    assert value_at(b, 99) is None and value_at(b, 1e9) == (300.0, 50.0, 49.0, 51.0)
    # RRL's door logs at 400k samples (10 iterations): 0.0, 1.0 and 3.0 % success
    at = value_at(band(rrl_door_logs()), 400_000)
    assert at is not None and at[0] == 400_000 and at[2] == 0.0 and at[3] == 3.0


def test_the_axis_stops_near_our_runs_when_rrls_logs_go_far_beyond() -> None:
    """A 1.2M-sample run beside RRL's 12M-sample logs fills the axis, and RRL's curve within it
    sets the return axis' range: drawn to 12M, ours would be squeezed into its first tenth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.study.curves import RETURN
    from pipeline.study.figure import ZOOM_X_RATIO, Panel, _draw

    ours = band([Curve(np.linspace(4e3, 1.2e6, 300), np.linspace(-50, 2000, 300))])
    rrl = band([Curve(np.linspace(4e4, 1.2e7, 300), np.linspace(-50, 9000, 300))])
    for reference, xmax in ((rrl, ZOOM_X_RATIO * 1.2e6), (ours, None)):
        fig, ax = plt.subplots()
        _draw(ax, Panel("door", {"VAE": ours}, reference, RETURN))
        if xmax is None:  # a reference no longer than our run: the axis is matplotlib's own
            assert ax.get_xlim()[1] < ZOOM_X_RATIO * 1.2e6 and "see the table" not in ax.get_xlabel()
        else:
            assert ax.get_xlim() == (0.0, xmax) and "go on to 12M" in ax.get_xlabel()
            assert ax.get_ylim()[1] < 9000 * 0.5  # RRL's late returns do not flatten ours
        plt.close(fig)
