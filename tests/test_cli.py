"""The `rrl` command and the Makefile in front of it: options from the one table, make variables,
cache hits and status, and failures told as clear errors without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from stages.options import OPTIONS, overrides

ROOT = Path(__file__).resolve().parents[1]


def rrl(*args: str, env: dict[str, str] | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stages", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


def _tiny(data: Path, demos: tuple[Path, str], *args: str) -> subprocess.CompletedProcess[str]:
    path, sha = demos
    return rrl("--data", str(data), "--demos", str(path), "--demos-sha256", sha, "--size", "32",
               "--cameras", "top", "--workers", "1", *args)


@pytest.mark.gl
def test_cli_cache_hit_and_status(tiny_door_demos: tuple[Path, str], tmp_path: Path) -> None:
    first = _tiny(tmp_path, tiny_door_demos, "run", "render")
    assert first.returncode == 0, first.stderr
    assert "render: done" in first.stdout and "replay fidelity (states)" in first.stdout
    second = _tiny(tmp_path, tiny_door_demos, "run", "render")
    assert second.returncode == 0 and "render: cache hit" in second.stdout
    status = _tiny(tmp_path, tiny_door_demos, "status").stdout
    assert "demos" in status and status.count("up to date") >= 2
    stale = _tiny(tmp_path, tiny_door_demos, "--shadows", "1", "status").stdout
    assert "stale: config changed: shadows False -> True" in stale


def test_cli_reports_bad_demos_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "door.pickle"
    bad.write_bytes(b"not a pickle")
    proc = rrl("--data", str(tmp_path), "--demos", str(bad), "run", "demos", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "field '<file>'" in proc.stderr


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_option_sets_its_fields(option) -> None:  # type: ignore[no-untyped-def]
    values = {"task": "hammer", "replay": "open_loop", "precision": "bf16", "obs-mode": "state",
              "reward": "sparse", "shadows": "1", "cameras": "fixed", "demos-sha256": "a" * 64,
              "weights-sha256": "b" * 64, "device": "cpu", "distractors": "2",
              "source": "rollouts"}
    raw = values.get(option.name, "7")
    cfg = PipelineConfig().with_overrides(overrides({option.param: raw}, []))
    for dotted in option.fields:
        section, name = dotted.split(".")
        assert getattr(getattr(cfg, section), name) != getattr(getattr(PipelineConfig(), section), name)


def test_environment_variables_reach_the_config(tmp_path: Path) -> None:
    base = rrl("--data", str(tmp_path), "key", "encode", env={"RRL_WEIGHTS": "random"})
    other = rrl("--data", str(tmp_path), "key", "encode",
                env={"RRL_WEIGHTS": "random", "RRL_ENCODER": "resnet18"})
    assert base.returncode == 0 and other.returncode == 0, base.stderr + other.stderr
    assert base.stdout.strip() != other.stdout.strip()


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """`make` with this test's venv, never re-installing it (-o: treat as up to date)."""
    venv = Path(sys.executable).parents[1]
    return subprocess.run(["make", "--no-print-directory", "-o", f"{venv}/.installed", *args,
                           f"VENV={venv}"], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_make_refuses_a_misspelt_variable(tmp_path: Path) -> None:
    proc = make("status", "ENCDOER=resnet18", f"DATA={tmp_path}")
    assert proc.returncode != 0
    assert "unknown make variable 'ENCDOER'" in proc.stderr and "ENCODER" in proc.stderr


def test_make_variables_reach_the_config(tmp_path: Path) -> None:
    keys = []
    for extra in ([], ["ENCODER=resnet18"], ["SET=encode.resize=128 encode.crop=112"]):
        proc = make("status", f"DATA={tmp_path}", "WEIGHTS=random", *extra)
        assert proc.returncode == 0, proc.stderr
        keys.append(next(line for line in proc.stdout.splitlines() if line.startswith("encode")))
    assert len(set(keys)) == 3


def test_store_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "features.zarr"
    blocker.write_text("not a folder")
    proc = rrl("--data", str(tmp_path), "--store", str(blocker), "inspect", "a" * 64, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "Fix:" in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_workspace_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    data.mkdir()
    data.chmod(0o500)
    try:
        proc = rrl("--data", str(data), "--demos", str(tmp_path / "x.pickle"), "run", "demos")
    finally:
        data.chmod(0o700)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "permission denied" in proc.stderr and "Fix:" in proc.stderr


STATUS_IMPORTS = """
import sys
from stages.cli import app
try:
    app(["--data", sys.argv[1], "status"], standalone_mode=False)
finally:
    print([m for m in ("torch", "mujoco", "timm", "h5py", "distributed", "matplotlib")
           if m in sys.modules])
"""


def test_status_stays_light(tmp_path: Path) -> None:
    """`rrl status` computes every key without the heavy libraries (a fresh interpreter's
    sys.modules tells; a time bound would only measure the machine)."""
    proc = subprocess.run([sys.executable, "-c", STATUS_IMPORTS, str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("code, words", [
    (13, ["permission denied", "/store/x", "writable"]),
    (30, ["read-only", "/store/x", "STORE="]),
    (28, ["disk is full", "/store/x", "resume"]),
])
def test_os_errors_say_what_where_and_fix(code: int, words: list[str]) -> None:
    from stages.cli_errors import explain_os_error

    text = explain_os_error(OSError(code, os.strerror(code), "/store/x"))
    assert all(w in text for w in words) and "Fix:" in text


def test_verify_command_exit_code_follows_the_check(tmp_path: Path) -> None:
    import zarr

    from tests.reliability.test_store_verify import KEY, build

    build(tmp_path / "store")
    ok = rrl("--data", str(tmp_path), "verify", KEY, "--store", str(tmp_path / "store"))
    assert ok.returncode == 0 and "OK, 12 of 12 shards" in ok.stdout, ok.stderr
    arr = zarr.open_array(str(tmp_path / "store"), path=f"{KEY}/top", mode="r+")
    arr[0:10] = 0  # damage one shard behind the store's back
    bad = rrl("--data", str(tmp_path), "verify", KEY, "--store", str(tmp_path / "store"))
    assert bad.returncode == 1 and "FAILED" in bad.stdout


def test_a_release_of_a_policy_on_chosen_features_is_refused_before_anything_is_read(
        tmp_path: Path) -> None:
    weights = tmp_path / "enc.safetensors"
    weights.write_bytes(b"")
    proc = rrl("--data", str(tmp_path / "data"), "--set", f"encode.weights={weights}",
               "--set", "encode.layers=layer3", "release", "x")
    assert proc.returncode == 2, proc.stderr
    assert "encode.layers" in proc.stderr and "Fix: release a policy" in proc.stderr
    assert not (tmp_path / "data").exists() and not (ROOT / "results" / "x").exists()
