"""Errors that used to be tracebacks, silently read, or unclear (issue 18, item 5): each is now one
line with its fix, and exit status 2, as `rrl --help` documents."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def rrl(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stages", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **env})


def one_line_error(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Compute Failed" not in proc.stderr
    assert "Task exception was never retrieved" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Fix:" in errors[0], proc.stderr
    for text in expected:
        assert text in errors[0], errors[0]


def test_distractor_sheet_levels_that_are_not_numbers() -> None:
    one_line_error(rrl("distractors", "--levels", "x"), "--levels 'x'", "0,1,2,3")


def test_an_empty_item_in_a_list_setting_is_not_dropped() -> None:
    with pytest.raises(ConfigError, match=r"rollouts.distractors='0,,1': an empty item"):
        PipelineConfig().with_overrides({"rollouts.distractors": "0,,1"})
    assert PipelineConfig().with_overrides({"rollouts.distractors": "0, 1"}).rollouts.distractors \
        == (0, 1)
    one_line_error(rrl("--distractors", "0,,1", "status"), "empty item between commas")


def test_status_of_an_unknown_encoder_exits_2_like_any_invalid_setting() -> None:
    one_line_error(rrl("--encoder", "resnet343", "status"), "unknown encoder 'resnet343'")
    one_line_error(rrl("--iters", "-1", "status"), "dapg.iterations")
    assert "Exit status: 0 done; 1 a check found problems" in " ".join(rrl("--help").stdout.split())


def test_a_misspelt_budget_setting_is_named_with_a_suggestion(tmp_path: Path) -> None:
    from pipeline.study.spec import load_experiment

    path = tmp_path / "typo.toml"
    path.write_text('[base]\n"dapg.iterations" = 2\n[grid]\n"policy.hidden" = ["8"]\n'
                    "[budgets.smoke]\nsedes = [0, 1]\n")
    with pytest.raises(ConfigError, match=r"\[budgets.smoke\] sedes.*neither a run setting.*"
                                          r"did you mean 'seeds'"):
        load_experiment(path)


@contextlib.contextmanager
def tiny_filesystem(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (root only); the test is skipped where mounting is not allowed."""
    where = Path("/tmp") / f"rrl-full-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        where.rmdir()
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


@pytest.mark.gl
def test_a_disk_that_fills_during_encode_is_one_line_not_a_worker_traceback(
        tiny_door_demos: tuple[Path, str], tmp_path: Path) -> None:
    demos, sha = tiny_door_demos
    with tiny_filesystem("24k") as full:
        proc = rrl("--data", str(tmp_path), "--demos", str(demos), "--demos-sha256", sha,
                   "--size", "48", "--encoder", "resnet10t", "--weights", "random",
                   "--set", "encode.resize=48", "--set", "encode.crop=40",
                   "--set", "render.workers=1", "--set", f"encode.store={full / 'store'}",
                   "run", "encode")
    one_line_error(proc, "the disk is full", "run the same command again to resume")
