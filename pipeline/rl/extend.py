"""Continue a finished DAPG run instead of starting a longer one from nothing.

The trainer seeds iteration k from (seed, k) and checkpoints its random streams, so the first N
iterations of an M-iteration run (M > N) are exactly those of the N-iteration run with the same
other inputs (tests/test_learning_stages.py asserts it). A longer run therefore starts from the
longest finished shorter one: its checkpoint, logs and recorded rollouts are copied into the new
output folder and the trainer resumes there. The shorter run's folder is left as it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.fileio import atomic_path
from pipeline.manifests import MANIFEST, read_manifest
from pipeline.outputs import BC_START, CHECKPOINT, EVAL_LOG, LOG

# Copied as they are; the checkpoint goes last, since its presence is what makes the trainer resume.
_CARRIED = (BC_START, LOG, EVAL_LOG)
_ROLLOUTS = "rollouts"


def _without_iterations(inputs: dict[str, Any]) -> dict[str, Any]:
    return {**inputs, "dapg": {k: v for k, v in inputs["dapg"].items() if k != "iterations"}}


def shorter_run(stage_dir: Path, version: str, inputs: dict[str, Any],
                upstream: dict[str, str]) -> tuple[Path, int] | None:
    """The finished run under `stage_dir` whose manifest matches `inputs` and `upstream` except
    for fewer iterations (the most of them), with its iteration count; None if there is none."""
    wanted = inputs["dapg"]["iterations"]
    best: tuple[Path, int] | None = None
    for manifest_path in stage_dir.glob(f"*/{MANIFEST}"):
        m = read_manifest(manifest_path)
        if m is None:
            continue  # damaged, or another key's: never a source
        try:
            done = int(m["inputs"]["dapg"]["iterations"])
            same = (m.get("version") == version and m.get("upstream") == upstream
                    and _without_iterations(m["inputs"]) == _without_iterations(inputs)
                    and int(m["summary"]["iterations"]) == done)
        except (ValueError, KeyError, TypeError):
            continue  # not a dapg manifest this code can read: never a source
        folder = manifest_path.parent
        if same and done < wanted and (folder / CHECKPOINT).is_file() and (
                best is None or done > best[1]):
            best = (folder, done)
    return best


def progress(out_dir: Path) -> int:
    """Iterations a run's own folder holds: its log gets a row after each checkpoint (torch-free)."""
    log = out_dir / LOG
    return max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0


def continuation(out_dir: Path, version: str, inputs: dict[str, Any],
                 upstream: dict[str, str]) -> tuple[Path, int] | None:
    """The finished shorter run this run should start from: one further along than its own
    checkpoint (both hold the same iterations, so more of them wins); None to resume as it is."""
    found = shorter_run(out_dir.parent, version, inputs, upstream)
    return found if found is not None and found[1] > progress(out_dir) else None


def continue_from(source: Path, out_dir: Path, log: Callable[[str], None]) -> None:
    """Copy a finished run's training state into `out_dir` (which holds no checkpoint yet)."""
    for name in _CARRIED:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
    if (source / _ROLLOUTS).is_dir():
        shutil.copytree(source / _ROLLOUTS, out_dir / _ROLLOUTS, dirs_exist_ok=True)
    with atomic_path(out_dir / CHECKPOINT) as tmp:  # a crash leaves a fresh start, not half a file
        shutil.copy2(source / CHECKPOINT, tmp)
    log(f"[dapg] continuing the finished run {source.name[:12]} (same inputs and seed, fewer "
        f"iterations): its iterations are this run's first ones")
