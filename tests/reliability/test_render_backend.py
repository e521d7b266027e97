"""A rendering backend that cannot work fails at once with a clear error, in the parent process,
before any worker starts (a pool would otherwise respawn crashing workers forever)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, gl: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RRL_MUJOCO_GL")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**env, "MUJOCO_GL": gl})


def test_unknown_backend_is_refused_on_import() -> None:
    proc = _run("import pipeline.envs.adroit", "bogus")
    assert proc.returncode != 0
    assert "MUJOCO_GL='bogus' is not a MuJoCo rendering backend" in proc.stderr
    assert "egl, osmesa, glfw" in proc.stderr and "Fix:" in proc.stderr


def test_backend_that_cannot_render_here_is_refused() -> None:
    if os.environ.get("DISPLAY"):
        pytest.skip("glfw may work where a display exists")
    proc = _run("import pipeline.envs.adroit", "glfw")
    assert proc.returncode != 0 and "offscreen rendering with MUJOCO_GL=glfw fails" in proc.stderr


@pytest.mark.gl
def test_render_stage_with_bad_backend_fails_fast(tiny_door_demos: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    path, sha = tiny_door_demos
    cmd = [sys.executable, "-m", "stages", "--data", str(tmp_path), "--demos", str(path),
           "--demos-sha256", sha, "--size", "32", "--workers", "2", "run", "render"]
    for gl in ("bogus", "glfw"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RRL_MUJOCO_GL")}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=ROOT,
                              env={**env, "MUJOCO_GL": gl})
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "MUJOCO_GL" in proc.stderr
        assert proc.stderr.count("RenderBackendError") == 0  # told once, as an error line
        assert not list((tmp_path / "render").glob("*/manifest.json"))
