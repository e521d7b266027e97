"""The runner on toy stages: keys, manifests, cache hits, status, force, locks, crash/resume."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import EnvConfig, PipelineConfig, RenderConfig
from pipeline.errors import StageLockedError
from pipeline.runner import MANIFEST, Runner, Stage, StageContext, content_key, stage_lock

CALLS: list[str] = []


def _run_a(ctx: StageContext) -> dict[str, Any]:
    CALLS.append("a")
    (ctx.out_dir / "a.txt").write_text(str(ctx.config.env.width))
    return {"width": ctx.config.env.width}


def _run_b(ctx: StageContext) -> dict[str, Any]:
    CALLS.append("b")
    upstream = (ctx.upstream["a"].out_dir / "a.txt").read_text()
    if (ctx.out_dir / "crash-once").exists():
        (ctx.out_dir / "crash-once").unlink()
        (ctx.out_dir / "partial.txt").write_text("half")
        raise RuntimeError("simulated crash")
    (ctx.out_dir / "b.txt").write_text(upstream + ctx.config.render.replay)
    return {"resumed": (ctx.out_dir / "partial.txt").exists()}


def stages(version_b: str = "1") -> dict[str, Stage]:
    return {
        "a": Stage(
            name="a",
            version="1",
            upstream=(),
            inputs=lambda c: {"width": c.env.width, "shadows": c.env.shadows},
            run=_run_a,
        ),
        "b": Stage(
            name="b",
            version=version_b,
            upstream=("a",),
            inputs=lambda c: {"replay": c.render.replay},
            run=_run_b,
        ),
    }


def cfg(**values: Any) -> PipelineConfig:
    """The default config with these env (width, shadows) or render (replay, workers) fields."""
    env = {k: v for k, v in values.items() if k in ("width", "shadows")}
    render = {k: v for k, v in values.items() if k not in env}
    return dataclasses.replace(PipelineConfig(), env=EnvConfig(**env), render=RenderConfig(**render))


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def test_key_changes_exactly_when_an_input_changes() -> None:
    base = content_key("s", "1", {"x": 1, "y": [1, 2]}, {"up": "k"})
    assert base == content_key("s", "1", {"y": [1, 2], "x": 1}, {"up": "k"})  # order-free
    assert base != content_key("s", "2", {"x": 1, "y": [1, 2]}, {"up": "k"})
    assert base != content_key("s", "1", {"x": 2, "y": [1, 2]}, {"up": "k"})
    assert base != content_key("s", "1", {"x": 1, "y": [1, 2]}, {"up": "k2"})
    assert base != content_key("t", "1", {"x": 1, "y": [1, 2]}, {"up": "k"})


def test_keys_follow_config_and_upstream(tmp_path: Path) -> None:
    r0 = Runner(cfg(), stages(), tmp_path)
    same = Runner(cfg(workers=9), stages(), tmp_path)  # workers are not in the key
    wider = Runner(cfg(width=64), stages(), tmp_path)
    replay = Runner(cfg(replay="open_loop"), stages(), tmp_path)
    bumped = Runner(cfg(), stages(version_b="2"), tmp_path)
    assert (r0.key("a"), r0.key("b")) == (same.key("a"), same.key("b"))
    assert wider.key("a") != r0.key("a") and wider.key("b") != r0.key("b")  # upstream propagates
    assert replay.key("a") == r0.key("a") and replay.key("b") != r0.key("b")
    assert bumped.key("a") == r0.key("a") and bumped.key("b") != r0.key("b")


def test_run_writes_manifest_then_cache_hit(tmp_path: Path) -> None:
    runner = Runner(cfg(), stages(), tmp_path, log=lambda m: None)
    result = runner.run("b")  # runs missing upstream a first
    assert CALLS == ["a", "b"] and not result.cache_hit
    manifest = json.loads((result.out_dir / MANIFEST).read_text())
    assert manifest["key"] == runner.key("b") and manifest["upstream"] == {"a": runner.key("a")}
    assert result.out_dir == tmp_path / "b" / runner.key("b")[:12]
    again = Runner(cfg(), stages(), tmp_path, log=lambda m: None).run("b")
    assert again.cache_hit and CALLS == ["a", "b"]
    forced = Runner(cfg(), stages(), tmp_path, log=lambda m: None).run("b", force=True)
    assert not forced.cache_hit and CALLS == ["a", "b", "b"]  # FORCE redoes only the named stage


def test_status_reports_missing_up_to_date_and_stale_reasons(tmp_path: Path) -> None:
    runner = Runner(cfg(), stages(), tmp_path, log=lambda m: None)
    assert [s.state for s in runner.status()] == ["missing", "missing"]
    runner.run("b")
    assert [s.state for s in Runner(cfg(), stages(), tmp_path).status()] == ["up to date"] * 2
    changed = {s.name: s for s in Runner(cfg(shadows=True), stages(), tmp_path).status()}
    assert changed["a"].state == "stale" and "shadows False -> True" in changed["a"].reason
    assert changed["b"].state == "stale" and "upstream a changed" in changed["b"].reason
    bumped = {s.name: s for s in Runner(cfg(), stages(version_b="2"), tmp_path).status()}
    assert bumped["a"].state == "up to date"
    assert "code version changed (1 -> 2)" in bumped["b"].reason


def test_an_interrupted_output_is_reported_as_such_beside_an_older_finished_one(tmp_path: Path) -> None:
    Runner(cfg(), stages(), tmp_path, log=lambda m: None).run("a")
    other = Runner(cfg(shadows=True), stages(), tmp_path, log=lambda m: None)
    (tmp_path / "a" / other.key("a")[:12]).mkdir()  # started under the new key, then killed
    st = other.stage_status("a")
    assert st.state == "missing" and st.reason.startswith("interrupted"), st


def test_crash_leaves_no_manifest_and_resumes(tmp_path: Path) -> None:
    runner = Runner(cfg(), stages(), tmp_path, log=lambda m: None)
    out = runner.out_dir("b")
    out.mkdir(parents=True)
    (out / "crash-once").write_text("")
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.run("b")
    assert not (out / MANIFEST).exists() and (out / "partial.txt").exists()
    assert [s.state for s in runner.status()][1] == "missing"
    result = Runner(cfg(), stages(), tmp_path, log=lambda m: None).run("b")
    assert result.summary["resumed"] is True  # partial output was kept for the stage to reuse


def _hold_lock(path: str, ready: Any, release: Any) -> None:
    with stage_lock(Path(path), "b"):
        ready.set()
        release.wait(10)


def test_lock_refuses_a_second_concurrent_run(tmp_path: Path) -> None:
    runner = Runner(cfg(), stages(), tmp_path, log=lambda m: None)
    runner.run("a")
    lock = runner.out_dir("b").with_suffix(".lock")
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(lock), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StageLockedError, match="already running"):
            runner.run("b")
    finally:
        release.set()
        holder.join(10)
    result = runner.run("b")  # the lock went with the process: this run is not refused
    assert not result.cache_hit and (result.out_dir / MANIFEST).exists()


def test_an_output_finished_elsewhere_while_upstream_ran_is_not_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = Runner(cfg(), stages(), tmp_path, log=lambda m: None)
    runner = Runner(cfg(), stages(), tmp_path, log=lambda m: None)
    run = runner.run

    def upstream_then_b_finishes_elsewhere(name: str, force: bool = False) -> Any:
        result = run(name, force)
        if name == "a":
            other.run("b")  # e.g. a second experiment sharing this cell
        return result

    monkeypatch.setattr(runner, "run", upstream_then_b_finishes_elsewhere)
    result = run("b")
    assert CALLS == ["a", "b"] and result.cache_hit  # b ran once, in the other runner
