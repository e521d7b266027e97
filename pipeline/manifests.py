"""What a manifest records beside a stage's key, and how it is written.

A manifest is the "done" marker of a stage output, so it is written last and atomically; the
rest here is the provenance it carries (package versions, the git commit, sizes) and what
`status` reads back to explain why an output is stale.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.fileio import read_json_object

MANIFEST = "manifest.json"
_VERSIONED_PACKAGES = ("numpy", "torch", "timm", "mujoco", "gymnasium-robotics", "h5py", "zarr")


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``, or None where there is none to trust: missing, unreadable, not
    a JSON object, or naming a key its folder (the key's first 12 digits) does not. A damaged
    manifest thus reads as "not done": the output is checked or redone, never used on its word."""
    manifest = read_json_object(path)
    if manifest is None or not isinstance(manifest.get("summary"), dict) or \
            not str(manifest.get("key", "")).startswith(path.parent.name):
        return None
    return manifest


def latest_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The newest readable manifest of a stage's outputs (what `status` compares with)."""
    paths = sorted(stage_dir.glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((m for m in map(read_manifest, paths) if m is not None), None)


def diff_flat(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_flat(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in _VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def git_commit() -> str:
    """HEAD of the checkout the code runs from, with ``+dirty`` when it has uncommitted changes
    to tracked files (then HEAD alone does not say what code ran)."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=here).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head
