"""An episode file that cannot be opened is never deleted: one held open by another process is
refused (it may be that process's data), a corrupt one is moved aside and started over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.store.episodes import Episode, EpisodeReader, EpisodeWriter

HOLD_OPEN = """
import sys, time, h5py
f = h5py.File(sys.argv[1], "r")
print("open", flush=True)
sys.stdin.readline()
"""


def _episode(steps: int = 3) -> Episode:
    return Episode(frames={"top": np.zeros((steps, 4, 4, 3), np.uint8)},
                   actions=np.zeros((steps, 2)), rewards=np.ones(steps), states=np.zeros((steps, 5)),
                   proprio=np.zeros((steps, 24)), observations=np.zeros((steps, 6)),
                   attrs={"success": True})


def _write_one(path: Path) -> None:
    writer = EpisodeWriter(path, {"env_name": "door"}, "sha", ("top",))
    writer.write(0, _episode())
    writer.close()


def test_a_file_open_in_another_process_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "episodes.hdf5"
    _write_one(path)
    before = path.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match=r"episodes\.hdf5: the episode file is open in another "
                                             r"process .*Fix: wait for that process"):
            EpisodeWriter(path, {"env_name": "door"}, "sha", ("top",))
    finally:
        holder.communicate("done\n", timeout=30)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
    with EpisodeReader(path) as reader:  # still whole and readable
        assert reader.num_rows == 3 and reader.attrs(0) == {"success": True}


def test_a_corrupt_file_is_moved_aside_and_started_over(tmp_path: Path) -> None:
    path = tmp_path / "episodes.hdf5"
    _write_one(path)
    truncated = path.read_bytes()[:1000]  # as a crash mid-write can leave it
    path.write_bytes(truncated)
    logs: list[str] = []
    writer = EpisodeWriter(path, {"env_name": "door"}, "sha", ("top",), log=logs.append)
    assert writer.completed() == set()
    writer.write(0, _episode(2))
    writer.close()
    aside = [p for p in tmp_path.iterdir() if p != path]
    assert len(aside) == 1 and aside[0].name.startswith("episodes.hdf5.corrupt-")
    assert aside[0].read_bytes() == truncated  # moved, not deleted or altered
    assert any(str(aside[0]) in m for m in logs)
    with h5py.File(path, "r") as f:
        assert f["data/demo_0/actions"].shape == (2, 2)
