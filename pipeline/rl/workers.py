"""Worker processes that talk over pipes: the samplers' shared process plumbing."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any


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
            proc = ctx.Process(target=target, args=(child, *worker_args), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):  # a worker that already died
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []
