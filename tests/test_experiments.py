"""Experiment files: grid expansion, validation, shared upstream stages; a tiny experiment run on a
real dask cluster (2 state cells), rerun as cache hits, its status; kill -9 and resume (slow)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.encoders.registry import HubLocation, encoder_spec
from pipeline.errors import ConfigError, WeightsError
from pipeline.locks import lock_holder
from pipeline.runner import MANIFEST
from pipeline.study.cells import cell_state, plan, shared_jobs
from pipeline.study.execute import run_experiment
from pipeline.study.spec import REPO_EXPERIMENTS, Cell, Experiment, find_experiment, load_experiment
from stages import STAGES
from tests.helpers import stand_in_pretrained

ROOT = Path(__file__).resolve().parents[1]
GRID = """
title = "two encoders"
[base]
"env.task" = "door"
"dapg.iterations" = 7
[grid]
"encode.encoder" = ["resnet18", "mobilenetv3_large_100"]
"policy.seed" = [0, 1]
[[cells]]
name = "DAPG (state)"
"policy.obs_mode" = "state"
"dapg.iterations" = 9
[budgets.smoke]
"dapg.iterations" = 3
"dapg.trajectories" = 4
[budgets.paper]
seeds = [0, 1, 2]
"dapg.trajectories" = 200
"""
# Two state cells, small enough to run on a real cluster in a fast test.
TINY = """
title = "tiny"
[base]
"env.task" = "door"
"demos.path" = "{path}"
"demos.sha256" = "{sha}"
"policy.obs_mode" = "state"
[grid]
"policy.seed" = [0, 1]
[budgets.smoke]
parallel = 2
"dapg.iterations" = {iterations}
"dapg.trajectories" = 4
"env.horizon" = 20
"dapg.eval_episodes" = 2
"dapg.envs" = 2
"evaluate.episodes" = 2
"evaluate.video_episodes" = 0
"""


def write(tmp_path: Path, text: str, name: str = "exp") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def tiny(tmp_path: Path, demos: tuple[Path, str], iterations: int = 2) -> Path:
    return write(tmp_path, TINY.format(path=demos[0], sha=demos[1], iterations=iterations), "tiny")


def test_grid_expands_to_cells_with_budget_and_cell_values(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, GRID))
    cells = exp.cells("smoke")
    assert [c.name for c in cells] == [
        "encoder=resnet18 seed=0", "encoder=resnet18 seed=1", "encoder=mobilenetv3_large_100 seed=0",
        "encoder=mobilenetv3_large_100 seed=1", "DAPG (state)"]
    assert [c.group for c in cells][::2] == ["encoder=resnet18", "encoder=mobilenetv3_large_100",
                                             "DAPG (state)"]
    first, state = cells[0].config, cells[-1].config
    # base < budget < cell: the budget overrides [base]; the extra cell overrides the budget.
    assert first.encode.encoder == "resnet18" and first.dapg.iterations == 3
    assert first.dapg.trajectories == 4 and state.dapg.iterations == 9
    assert state.policy.obs_mode == "state" and first.policy.obs_mode == "vision+proprio"
    paper = exp.cells("paper")  # the budget's seeds replace the grid's, in every cell
    assert len(paper) == 2 * 3 + 3 and paper[-1].name == "DAPG (state) seed=2"
    assert {c.config.dapg.trajectories for c in paper} == {200}


def test_shared_upstream_stages_are_planned_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_pretrained(tmp_path / "cache", monkeypatch, ("resnet18", "mobilenetv3_large_100"))
    exp = load_experiment(write(tmp_path, GRID))
    plans = plan(exp, exp.cells("smoke"), STAGES, tmp_path)
    assert len({p.key for p in plans}) == 5
    assert plans[0].own == ("bc", "dapg", "evaluate")
    assert plans[0].shared == ("demos", "render", "encode") and plans[-1].shared == ("demos",)
    jobs = [(stage, p.keys[stage]) for stage, p in shared_jobs(plans, STAGES)]
    # One demos (shared by all), one render (both encoders), one encode per encoder.
    assert [s for s, _ in jobs] == ["demos", "render", "encode", "encode"]
    assert len(set(jobs)) == 4
    assert plans[0].keys["encode"] == plans[1].keys["encode"] != plans[2].keys["encode"]


@pytest.mark.parametrize(("text", "field"), [
    (GRID.replace('"encode.encoder"', '"encode.encodr"'), "encodr"),
    (GRID.replace('"dapg.trajectories" = 4', '"dapg.trajectories" = 0'), "dapg.trajectories"),
    (GRID.replace('"dapg.trajectories" = 4', '"dapg.trajectories" = "many"'), "dapg.trajectories"),
    (GRID.replace('"policy.seed" = [0, 1]', '"policy.seed" = [0, -1]'), "policy.seed"),
    (GRID.replace('title =', 'titel ='), "titel"),
    (GRID.replace("seeds = [0, 1, 2]", "seeds = [0.5]"), "seeds"),
    (GRID.replace('"policy.obs_mode" = "state"', '"policy.obs_mode" = "pixels"'), "policy.obs_mode"),
    (GRID.replace('name = "DAPG (state)"', ""), "[[cells]] #1"),
], ids=["unknown-field", "out-of-range", "wrong-type", "bad-grid-value", "unknown-top-level",
        "bad-seeds", "bad-choice", "unnamed-cell"])
def test_validation_names_the_file_and_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and field in str(err.value) and "Fix:" in str(err.value)


def test_unknown_encoder_budget_and_duplicate_cells_are_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_pretrained(tmp_path / "cache", monkeypatch, ("resnet18", "mobilenetv3_large_100"))
    exp = load_experiment(write(tmp_path, GRID.replace('"resnet18"', '"resnet19"')))
    with pytest.raises(ConfigError, match="resnet19"):  # encoder names are known at planning
        plan(exp, exp.cells("smoke"), STAGES, tmp_path)
    with pytest.raises(ConfigError, match=r"budget.*'huge'.*paper, smoke"):
        exp.budget("huge")
    twice = GRID + '\n[[cells]]\nname = "again"\n"policy.obs_mode" = "state"\n"dapg.iterations" = 9\n'
    exp = load_experiment(write(tmp_path, twice, "twice"))
    with pytest.raises(ConfigError, match=r"'DAPG \(state\)' and 'again'.*same config"):
        plan(exp, exp.cells("smoke"), STAGES, tmp_path)


def test_shipped_experiments_expand_and_share_rrls_cell(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    names = sorted(p.stem for p in REPO_EXPERIMENTS.glob("*.toml") if not p.name.startswith("_"))
    assert {"smoke", "encoders", "resnet_size", "inputs", "reward", "policy_size", "baselines"} <= set(names)
    # Pretrained keys hold the weights file's sha256: offline, stand-in files give them, for the
    # Hugging Face hub's weights. A torchvision download's name carries its sha256 prefix, which
    # no stand-in can match: those cells (ShuffleNet) are left out here.
    pretrained = {c.config.encode.encoder for name in names
                  for exp in [load_experiment(find_experiment(name))] for budget in exp.budgets
                  for c in exp.cells(budget) if c.config.encode.weights == "pretrained"}
    hub = {n for n in pretrained if (encoder_spec(n).hub or HubLocation()).hf_hub_id}
    stand_in_pretrained(tmp_path / "cache", monkeypatch, tuple(sorted(hub)))

    def cells(exp: Experiment, budget: str) -> list[Cell]:
        return [c for c in exp.cells(budget)
                if c.config.encode.weights != "pretrained" or c.config.encode.encoder in hub]

    rrl_keys = {}
    for name in names:
        exp = load_experiment(find_experiment(name))
        assert {"smoke", "paper"} <= set(exp.budgets), name
        trained = {c.config.encode.encoder for c in exp.cells("smoke")} & {"vae", "rad"}
        if trained and any(c.config.encode.weights not in ("random", "pretrained")
                           for c in exp.cells("paper") if c.config.encode.encoder in trained):
            # An encoder trained here (VAE, RAD) is named by its key: without that output,
            # planning says how to make it.
            with pytest.raises(WeightsError, match=r"names 0 finished (vae|rad) outputs.*Fix: run "
                               r"`make (vae|rad)"):
                plan(exp, cells(exp, "paper"), STAGES, tmp_path)
            continue
        paper = plan(exp, cells(exp, "paper"), STAGES, tmp_path)
        assert {p.cell.config.dapg.iterations for p in paper} == {300}, name
        assert {p.cell.config.policy.seed for p in paper} == {0, 1, 2}, name
        for p in plan(exp, cells(exp, "smoke"), STAGES, tmp_path):
            cfg = p.cell.config
            if (cfg.encode.encoder, cfg.policy.obs_mode, cfg.env.reward, cfg.policy.hidden) == (
                    "resnet34", "vision+proprio", "dense", (256, 256)):
                rrl_keys[name] = p.key
    # RRL's own setting is one cell, computed once, whichever ablation runs it first.
    assert len(rrl_keys) >= 5 and len(set(rrl_keys.values())) == 1


def test_experiment_runs_on_dask_then_hits_the_cache(tiny_door_demos: tuple[Path, str],
                                                     tmp_path: Path) -> None:
    exp = load_experiment(tiny(tmp_path, tiny_door_demos))
    data = tmp_path / "data"
    logs: list[str] = []
    first = run_experiment(exp, "smoke", exp_base(), STAGES, data, log=logs.append)
    assert [o.status for o in first] == ["done", "done"], [o.detail for o in first]
    plans = plan(exp, exp.cells("smoke"), STAGES, data)
    for p in plans:
        assert (data / "evaluate" / p.key[:12] / MANIFEST).exists()
        # The cell ran in a dask worker process, which held the stage lock (and wrote its pid).
        lock = (data / "dapg" / p.keys["dapg"][:12]).with_suffix(".lock").read_text()
        assert lock.startswith("pid ") and lock != f"pid {os.getpid()}"
        assert lock_holder((data / "dapg" / p.keys["dapg"][:12]).with_suffix(".lock")) is None
        cell_log = data / "experiments/tiny/smoke/logs" / f"{p.cell.slug}.log"
        assert "[dapg] running" in cell_log.read_text()
    assert sum("shared demos" in m for m in logs) == 1
    created = {p.key: _created(data, p) for p in plans}

    second = run_experiment(exp, "smoke", exp_base(), STAGES, data, log=logs.append)
    assert [o.status for o in second] == ["cache hit", "cache hit"]
    assert {p.key: _created(data, p) for p in plans} == created

    states = [cell_state(p, data) for p in plans]
    assert [s.state for s in states] == ["done", "done"]
    out = subprocess.run([sys.executable, "-m", "stages", "--data", str(data), "experiment",
                          "status", str(tmp_path / "tiny.toml")], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [line.split()[-1] for line in out.stdout.splitlines()] == ["done", "done"]
    assert all(p.key[:12] in out.stdout for p in plans)


def test_status_says_missing_stale_and_running(tiny_door_demos: tuple[Path, str],
                                               tmp_path: Path) -> None:
    import fcntl

    from pipeline.study.cells import record_dir, write_record

    data = tmp_path / "data"
    exp = load_experiment(tiny(tmp_path, tiny_door_demos))
    old = plan(exp, exp.cells("smoke"), STAGES, data)
    assert cell_state(old[0], data).detail == "never run"
    # A finished output under the cell's previous keys: after a config change the cell is stale.
    for stage in ("dapg", "evaluate"):
        folder = data / stage / old[0].keys[stage][:12]
        folder.mkdir(parents=True)
        (folder / MANIFEST).write_text(json.dumps({**old[0].inputs[stage], "key": old[0].keys[stage],
                                                   "summary": {"iterations": 2}}))
    (data / "dapg" / old[0].keys["dapg"][:12] / "checkpoint.pt").touch()
    write_record(record_dir(data, exp, "smoke"), old)
    longer = load_experiment(tiny(tmp_path, tiny_door_demos, iterations=5))
    new = plan(longer, longer.cells("smoke"), STAGES, data)
    record = json.loads((record_dir(data, exp, "smoke") / "cells.json").read_text())
    st = cell_state(new[0], data, record[new[0].cell.name])
    assert st.state == "stale" and "dapg: config changed: dapg.iterations 2 -> 5" in st.detail
    # More iterations of a finished run: its dapg starts from it (rl/extend.py), and says so.
    assert st.detail.endswith("its dapg continues the finished 2-iteration run")
    assert cell_state(new[0], data).detail == "not run; its dapg continues the finished 2-iteration run"
    assert cell_state(new[1], data).detail == "never run"  # seed 1: nothing of its own to continue
    # A held stage lock is a running cell; status only looks, it never takes the lock.
    lock = (data / "dapg" / new[1].keys["dapg"][:12]).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cell_state(new[1], data).state == "running"
        assert lock_holder(lock) == f"pid {os.getpid()}"
    assert cell_state(new[1], data).state == "missing"


def test_a_shared_stage_running_elsewhere_is_waited_for(tiny_door_demos: tuple[Path, str],
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from pipeline.runner import stage_lock
    from pipeline.study import execute

    monkeypatch.setattr(execute, "LOCK_POLL_S", 0.05)
    exp = load_experiment(tiny(tmp_path, tiny_door_demos))
    data = tmp_path / "data"
    plans = plan(exp, exp.cells("smoke"), STAGES, data)
    logs: list[str] = []
    worker = threading.Thread(target=execute.run_shared, args=(plans, STAGES, data, logs.append))
    with stage_lock((data / "demos" / plans[0].keys["demos"][:12]).with_suffix(".lock"), "demos"):
        worker.start()  # another process's demos run holds the lock: the worker must wait
        deadline = time.monotonic() + 60
        while not any("waiting for it" in m for m in logs):
            assert worker.is_alive() and time.monotonic() < deadline, logs
            worker.join(timeout=0.05)
        assert worker.is_alive()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert (data / "demos" / plans[0].keys["demos"][:12] / MANIFEST).exists()


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_keeps_finished_cells(tiny_door_demos: tuple[Path, str],
                                                        tmp_path: Path) -> None:
    path = tiny(tmp_path, tiny_door_demos, iterations=30)
    path.write_text(path.read_text().replace("parallel = 2", "parallel = 1"))
    exp = load_experiment(path)
    data = tmp_path / "data"
    plans = plan(exp, exp.cells("smoke"), STAGES, data)
    cmd = [sys.executable, "-m", "stages", "--data", str(data), "experiment", "run", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while not _one_done_one_started(data, plans):
            assert proc.poll() is None, "the experiment ended before it could be interrupted"
            assert time.monotonic() < deadline, "no cell finished in 10 minutes"
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    done = next(p for p in plans if (data / "evaluate" / p.key[:12] / MANIFEST).exists())
    created = _created(data, done)
    # The workers exit with their nanny: the interrupted cell's lock is free again.
    lock = (data / "dapg" / plans[1 - plans.index(done)].keys["dapg"][:12]).with_suffix(".lock")
    for _ in range(60):
        if lock_holder(lock) is None:
            break
        time.sleep(0.5)
    assert lock_holder(lock) is None
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    # The finished cell was not redone: the same manifests, and a cache hit.
    assert _created(data, done) == created
    assert re.search(rf"{re.escape(done.cell.name)}\s+{done.key[:12]}\s+cache hit", rerun.stdout)
    other = plans[1 - plans.index(done)]
    cell_log = (data / "experiments/tiny/smoke/logs" / f"{other.cell.slug}.log").read_text()
    resumed = re.search(r"resuming .* at iteration (\d+)", cell_log)
    assert resumed and int(resumed.group(1)) >= 1, cell_log  # continued from its checkpoint
    assert (data / "evaluate" / other.key[:12] / MANIFEST).exists()


def _one_done_one_started(data: Path, plans: list) -> bool:  # type: ignore[type-arg]
    done = [(data / "evaluate" / p.key[:12] / MANIFEST).exists() for p in plans]
    started = [(data / "dapg" / p.keys["dapg"][:12] / "log.csv").exists() for p in plans]
    return any(done) and any(s and not d for s, d in zip(started, done, strict=True))


def _created(data: Path, p) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s: json.loads((data / s / p.keys[s][:12] / MANIFEST).read_text())["created"]
            for s in p.own}


def exp_base():  # type: ignore[no-untyped-def]
    from pipeline.config import PipelineConfig

    return PipelineConfig()
