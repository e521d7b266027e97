"""kill -9 of a stage leaves no worker behind (issue 18, item 6): the render pool's and the rollout
sampler's processes end with the process that started them, within a second or two."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gl
ROOT = Path(__file__).resolve().parents[2]


def children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# Each stage, and a line of its output that shows its workers at work (so they are past start-up,
# where a child still importing finds its parent gone and exits as soon as it gets going).
BUSY = {"render": ("--max-demos", "8", "--set", "render.workers=2"), "dapg": (
    "--obs-mode", "state", "--iters", "50", "--traj", "40", "--set", "dapg.envs=4")}
MARKER = {"render": re.compile(r"\| +[1-9]\d*/\d+ \["), "dapg": re.compile(r"\[dapg\] .*start:")}


@pytest.mark.parametrize("stage", ["render", pytest.param("dapg", marks=pytest.mark.slow)])
def test_workers_end_with_a_killed_stage(stage: str, door_demos_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "stage.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stages", "--data", str(tmp_path / "data"),
                                 "--demos", str(door_demos_path), *BUSY[stage], "run", stage],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not MARKER[stage].search(log.read_text()):
            assert proc.poll() is None, f"the stage ended early: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the workers never got to work"
            time.sleep(0.2)
        workers = {c for c in children(proc.pid)
                   if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if alive(w)], "workers outlived the killed stage"
    finally:
        if proc.poll() is None:
            proc.kill()
