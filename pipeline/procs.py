"""Child processes that do not outlive their parent.

A worker process (render pool, rollout sampler, video writer) must end when the process that
started it is killed (kill -9, the OOM killer): an orphan keeps its cores busy and can keep
writing into an output that a re-run is resuming. Every spawned child calls ``exit_with_parent``
first. On Linux the kernel then sends it SIGKILL when its parent dies (PR_SET_PDEATHSIG); where
that is unavailable, a daemon thread polls the parent's pid and exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.5


def exit_with_parent(parent_pid: int | None = None) -> None:
    """Make this process end as soon as its parent does (call it first thing in a child).

    ``parent_pid``: the pid the child expects as its parent (``os.getppid()`` at start when not
    given); a parent that already died before this call is caught by comparing them.
    """
    expected = os.getppid() if parent_pid is None else parent_pid
    if not _set_pdeathsig():
        threading.Thread(target=_watch_parent, args=(expected,), daemon=True,
                         name="exit-with-parent").start()
    if os.getppid() != expected:  # the parent died before the kernel was asked to tell us
        os._exit(1)


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch_parent(expected: int) -> None:
    while os.getppid() == expected:
        time.sleep(_POLL_S)
    os._exit(1)
