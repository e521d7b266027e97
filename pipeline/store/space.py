"""Free disk space, checked before writing rather than discovered by a failed (or crashing) write.

HDF5 does not recover from a full disk: a write that hits ENOSPC can leave the library in a
state where the process aborts. So writers estimate what they will need and stop with a clear
error first; what they finished before stays on disk, and a re-run resumes from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.errors import bad_store

# Headroom kept free on top of the estimate (file system metadata, other writers, the OS, an
# estimate on the low side): a share of the job, so a 7 MB job does not ask for 256 MB.
MARGIN_SHARE = 0.25
MIN_MARGIN_BYTES = 16 << 20
# Stored bytes per raw frame byte for each frame codec (pipeline/store/frames.py), rounded up so
# the estimate errs on the safe side. lzf: door demos at 256 px, 710 MB for 1.32 GB of frames.
# zstd: 0.06 on the same frames; busier scenes (distractors) compress less, so 3x headroom.
CODEC_RATIOS = {"lzf": 0.6, "zstd": 0.2}


def disk_free(folder: Path) -> int:
    """Free bytes on the file system that holds ``folder`` (or its nearest existing parent)."""
    path = Path(folder).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def frames_bytes(frames: int, height: int, width: int, cameras: int, codec: str = "lzf") -> int:
    """Estimated bytes on disk for ``frames`` steps of RGB frames from ``cameras`` cameras,
    stored with ``codec`` (lzf, the default, is the largest)."""
    return int(frames * cameras * height * width * 3 * CODEC_RATIOS[codec])


def headroom(needed: int) -> int:
    """Bytes kept free beyond an estimate of ``needed``: in proportion, with a small floor."""
    return max(MIN_MARGIN_BYTES, int(needed * MARGIN_SHARE))


def require_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise a StoreError unless ``needed`` bytes (plus a margin) are free where ``folder`` is."""
    free = disk_free(folder)
    wanted = needed + headroom(needed)
    if free < wanted:
        raise bad_store(
            str(folder), f"not enough free disk space to write {what}: about "
            f"{wanted / 1e9:.3f} GB needed, {free / 1e9:.3f} GB free",
            "free some space or point DATA= at a larger disk; what was written so far is kept "
            "and a re-run resumes from it")
