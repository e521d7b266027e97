"""Atomic writes leave files as readable as a plain write would (shared folders, teammates)."""

from __future__ import annotations

import stat
from pathlib import Path

from pipeline.fileio import atomic_path, write_json_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_atomic_write_has_the_mode_of_a_plain_write(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    write_json_atomic(tmp_path / "manifest.json", {"done": True})
    with atomic_path(tmp_path / "weights.safetensors") as tmp:
        tmp.unlink()  # writers such as safetensors create the file anew
        tmp.write_bytes(b"\0" * 8)
    assert _mode(tmp_path / "manifest.json") == _mode(plain)
    assert _mode(tmp_path / "weights.safetensors") == _mode(plain)
