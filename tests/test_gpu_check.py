"""`make bench-gpu` without CUDA: the CPU parts run (a cold features run, software-GL render
frames/s), every CUDA part prints one skip line, and one table comes out. Tiny sizes through the
script's own arguments; `--no-cuda` takes this path on a GPU machine too."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--no-cuda", "--size", "64", "--max-demos", "1", "--max-steps", "12", "--encoder",
        "resnet10t", "--resize", "64", "--crop", "56", "--workers", "2", "--render-demos", "2",
        "--render-steps", "6", "--budget", "1800"]

pytestmark = pytest.mark.gl


def test_the_cpu_path_prints_one_table_and_a_line_per_skipped_part(
        door_demos_path: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", *TINY, "--demos-file",
                           str(door_demos_path), "--logs", str(logs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert out.count("| part | measure | value |") == 1
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line.split("|")[3].strip()
            for line in out.splitlines() if line.startswith("| ") and line.count("|") == 4}
    assert not any(measure == "result" for _, measure in rows), out  # nothing failed or timed out
    features = "make features (cpu, cold)"
    for stage in ("demos", "render", "encode"):
        assert re.fullmatch(r"\d+\.\d s.*", rows[(features, stage)]), out
    assert re.search(r"\(\d+\.\d+ frames/s on cpu\)", rows[(features, "encode")]), out
    assert "12 frames" in rows[(features, "wall time")]
    software = [v for (part, measure), v in rows.items() if measure.startswith("software GL")]
    assert len(software) == 1 and float(software[0].split()[0]) > 0, out
    skipped = [line for line in out.splitlines() if line.startswith("skipped: ")]
    expected = ["make test-gpu", "bench/encode.py on CUDA", "bench/rollout.py on CUDA",
                "render with MUJOCO_GL=egl on the GPU"]
    if shutil.which("nvidia-smi") is None:
        expected.append("nvidia-smi summary")
    assert sorted(line.split(": ")[1].split(" (")[0] for line in skipped) == sorted(expected), out
    assert {p.name for p in logs.iterdir()} == {"features.log", "render_software.log"}
