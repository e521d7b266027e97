"""Worker processes that talk over pipes: the samplers' shared process plumbing.

A worker that fails (a bad GL backend, an env that cannot be built, a bug) sends its exception
back before it exits, and the parent raises it from `recv`; a worker that dies without a word
(killed, crashed) is reported with its exit code. Either way the caller gets an error, never a
hang or a bare EOFError.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from pipeline.errors import PipelineError
from pipeline.procs import exit_with_parent


class WorkerError(PipelineError):
    """A sampler worker process failed; the message carries its own error."""


class _Failure:
    """What a failing worker sends instead of a reply."""

    def __init__(self, exc: BaseException) -> None:
        self.exc: BaseException | None = exc if _picklable(exc) else None
        self.text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self.trace = "".join(traceback.format_exception(exc)).strip()


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


class _KeepOpen:
    """The worker's end of the pipe, which the target may "close": it stays open for `_guarded`."""

    def __init__(self, conn: Connection) -> None:
        self.send, self.recv, self.poll = conn.send, conn.recv, conn.poll

    def close(self) -> None:
        pass


def _guarded(target: Callable[..., None], parent_pid: int, conn: Connection, *args: Any) -> None:
    exit_with_parent(parent_pid)  # a killed sampler must not leave its workers stepping envs
    try:
        target(_KeepOpen(conn), *args)
    except BaseException as exc:  # the parent reports it, once; this process ends quietly
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(_Failure(exc))
        sys.exit(1)
    finally:
        conn.close()


class PipeWorkers:
    """One spawned process per argument tuple; ``target(conn, *args)`` serves until it gets None.

    spawn, not fork: a forked child would inherit the parent's torch threads and GL state.
    """

    def __init__(self, target: Callable[..., None], args: Sequence[tuple[Any, ...]]) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for worker_args in args:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_guarded, args=(target, os.getpid(), child, *worker_args),
                               daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def recv(self, index: int) -> Any:
        """Worker ``index``'s reply; its failure (or death) raised here."""
        try:
            reply = self.conns[index].recv()
        except (EOFError, ConnectionResetError):
            proc = self.procs[index]
            proc.join(timeout=5)
            raise WorkerError(
                f"sampler worker {index} (pid {proc.pid}) died without a reply (exit code "
                f"{proc.exitcode}). Fix: see its output above; a negative code is the signal that "
                "killed it (e.g. -9: out of memory); finished iterations are kept, so re-running "
                "resumes") from None
        if isinstance(reply, _Failure):
            if reply.exc is not None and isinstance(reply.exc, PipelineError):
                raise reply.exc
            raise WorkerError(f"sampler worker {index} failed while building or stepping its envs: "
                              f"{reply.text}. Fix: this is a bug or a broken install, not bad "
                              f"input; the worker's traceback:\n{reply.trace}") from None
        return reply

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):  # a worker that already died
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []
