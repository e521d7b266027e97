"""The one place that makes dask clients, so cluster settings live in a single spot.

Stages scale from a laptop to a cluster by passing a scheduler address; the code they run is the
same either way.
"""

from __future__ import annotations

import logging
import warnings

import dask
from distributed import Client

# dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off glibc's adaptive
# mmap threshold: every large tensor is then mmapped and unmapped again, and a frozen encoder ran
# 3x slower in a worker than in a plain process (most of its time in the kernel). Keep freed
# memory for reuse instead; malloc reads these only at process start, hence "pre-spawn".
_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(2**30), "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def get_client(scheduler: str | None = None, workers: int = 2,
               threads_per_worker: int = 1, resources: dict[str, float] | None = None,
               child_processes: bool = False) -> Client:
    """A client of ``scheduler`` (``tcp://host:8786``), else of a new local cluster.

    The local cluster uses worker processes, not threads: encoders and zarr codecs hold the GIL
    for parts of their work, and one thread per worker keeps torch from oversubscribing cores.
    Closing the client also shuts down a local cluster it started.

    ``resources`` are declared by every local worker (``{"CELL": 1}``: tasks asking for a CELL run
    one per worker; a GPU worker would declare ``{"GPU": 1}``). A remote cluster's workers
    declare theirs when started (``dask worker ADDRESS --resources CELL=1``).
    ``child_processes``: tasks may start processes of their own (the rollout samplers do); a
    remote cluster's workers need ``DASK_DISTRIBUTED__WORKER__DAEMON=False`` for that.
    """
    if child_processes:
        # Workers are daemonic by default, and a daemonic process may not have children. Set for
        # the rest of this process, not only while the cluster starts: a nanny reads it again
        # whenever it restarts a worker that died. A worker still exits with its nanny.
        dask.config.set({"distributed.worker.daemon": False})
    if scheduler:
        return Client(scheduler)
    environ = {var: str(threads_per_worker) for var in _THREAD_VARS} | _MALLOC
    with warnings.catch_warnings(), dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        # The scheduler's HTTP endpoint moves to a free port when 8787 is taken (another cluster)
        # and warns; with no dashboard that port is never shown to anyone.
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        return Client(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                      dashboard_address=None, silence_logs=logging.WARNING,
                      **({"resources": resources} if resources else {}))
