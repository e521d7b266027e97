"""Stage locks: one process per stage output, and a way to see who holds one without taking it.

A lock is an exclusive ``flock`` on ``<stage>/<key12>.lock``; the OS drops it when the process
dies, so a killed run never leaves a stale lock. The holder writes its pid into the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import StageLockedError


@contextlib.contextmanager
def stage_lock(path: Path, name: str) -> Iterator[None]:
    """An exclusive, non-blocking lock; the OS drops it if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise StageLockedError(
                f"stage {name!r} is already running for this key ({holder} holds {path}). "
                "Fix: wait for it to finish, or stop that process"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_holder(path: Path) -> str | None:
    """Who holds the runner's flock on ``path`` ("pid N"), without touching the lock.

    Linux lists every flock in /proc/locks by inode; trying the lock instead could make a run
    that starts at that moment fail with "already running".
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return _try_lock(path)
    for line in lines:
        parts = line.replace("->", "").split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            return f"pid {parts[4]}"
    return None


def _try_lock(path: Path) -> str | None:
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None
