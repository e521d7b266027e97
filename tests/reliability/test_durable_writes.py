"""Atomic writes are durable (issue 18, item 7): the one helper fsyncs the file and its folder
before the write counts as done, a failed write keeps the previous content, and the pipeline's
done markers (manifests, checkpoints, logs) all go through it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline import fileio


def test_the_file_then_its_folder_are_fsynced_before_done(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", record)
    target = tmp_path / "manifest.json"
    fileio.write_json_atomic(target, {"key": "abc"})
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and synced[0] != str(target)  # the temp file
    assert synced[1] == str(tmp_path)  # then the folder, after the rename
    assert target.read_text() == '{\n  "key": "abc"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_failed_write_keeps_the_previous_content(tmp_path: Path) -> None:
    target = tmp_path / "log.csv"
    fileio.write_text_atomic(target, "old\n")

    def half_then_crash(handle: Any) -> None:
        handle.write("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        fileio.atomic_write(target, half_then_crash)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["log.csv"]


def test_done_markers_use_the_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifests, checkpoints and trainer logs are written through fileio (so fsynced)."""
    import torch

    from pipeline.fileio import write_csv_atomic
    from pipeline.rl import checkpoints

    seen: list[str] = []
    real = fileio.atomic_path

    def spy(path: str | Path) -> Any:
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(fileio, "atomic_path", spy)
    fileio.write_json_atomic(tmp_path / "manifest.json", {})
    monkeypatch.setattr(checkpoints, "atomic_path", spy)
    checkpoints.save_checkpoint(tmp_path / "policy.pt", {"w": torch.zeros(2)})
    write_csv_atomic(tmp_path / "log.csv", ["a"], [{"a": 1}])
    assert seen == ["manifest.json", "policy.pt", "log.csv"]
