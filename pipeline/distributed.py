"""The one place that makes dask clients, so cluster settings live in a single spot.

Stages scale from a laptop to a cluster by passing a scheduler address; the code they run is the
same either way.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dask
from dask.typing import no_default
from distributed import Client

from pipeline.devices import cuda_device_count, resolve_device

if TYPE_CHECKING:
    from distributed import SpecCluster

# dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also switches off glibc's adaptive
# mmap threshold: every large tensor is then mmapped and unmapped again, and a frozen encoder ran
# 3x slower in a worker than in a plain process (most of its time in the kernel). Keep freed
# memory for reuse instead; malloc reads these only at process start, hence "pre-spawn".
_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(2**30), "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# A task's failure reaches the client as its exception, which the CLI tells in one line with its
# fix; the worker's own log of it ("Compute Failed" and a traceback block) would only bury that
# line, as would the nanny's notes while a failed cluster shuts down. A worker that dies shows up
# as a KilledWorker exception the same way.
_CLUSTER_LOGS = logging.CRITICAL


def get_client(scheduler: str | None = None, workers: int = 2,
               threads_per_worker: int = 1, resources: dict[str, float] | None = None,
               child_processes: bool = False, gpus: Sequence[int] = ()) -> Client:
    """A client of ``scheduler`` (``tcp://host:8786``), else of a new local cluster.

    The local cluster uses worker processes, not threads: encoders and zarr codecs hold the GIL
    for parts of their work, and one thread per worker keeps torch from oversubscribing cores.
    Closing the client also shuts down a local cluster it started.

    ``resources`` are declared by every local worker (``{"CELL": 1}``: tasks asking for a CELL run
    one per worker; a GPU worker would declare ``{"GPU": 1}``). A remote cluster's workers
    declare theirs when started (``dask worker ADDRESS --resources CELL=1``).
    ``child_processes``: tasks may start processes of their own (the rollout samplers do); a
    remote cluster's workers need ``DASK_DISTRIBUTED__WORKER__DAEMON=False`` for that.
    ``gpus``: the local cluster gets one worker per listed GPU instead of ``workers``, each seeing
    only its own (``CUDA_VISIBLE_DEVICES``, so it computes on ``cuda:0``) and declaring
    ``{"GPU": 1}``; tasks that ask for a GPU then run one per GPU (see ``local_gpus``). A remote
    cluster's GPU workers are started that way by hand (``--resources GPU=1``, one GPU each).
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
        if gpus:
            return _ClusterClient(_gpu_cluster(gpus, threads_per_worker, resources or {}))
        return Client(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                      dashboard_address=None, silence_logs=_CLUSTER_LOGS,
                      **({"resources": resources} if resources else {}))


def local_gpus(device: str) -> tuple[int, ...]:
    """The GPUs a local cluster puts workers on for the device setting ``device``.

    ``auto`` and ``cuda`` use every visible GPU, ``cuda:N`` only GPU N, the CPU none. The
    setting is checked first, so ``cuda:7`` on a machine without it is a ConfigError here.
    """
    resolved = resolve_device(device)
    if not resolved.startswith("cuda"):
        return ()
    if device in ("auto", "cuda"):
        return tuple(range(cuda_device_count()))
    return (int(resolved.partition(":")[2]),)


def _gpu_cluster(gpus: Sequence[int], threads: int, resources: dict[str, float]) -> SpecCluster:
    # LocalCluster gives every worker the same options; CUDA_VISIBLE_DEVICES differs per worker.
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    host = "127.0.0.1"
    scheduler = {"cls": Scheduler, "options": {"host": host, "dashboard": False,
                                               "dashboard_address": None}}
    workers = {f"gpu{gpu}": {"cls": Nanny, "options": {
        "host": host, "nthreads": threads, "silence_logs": logging.WARNING,
        "memory_limit": MEMORY_LIMIT // len(gpus), "resources": {**resources, "GPU": 1},
        "env": {"CUDA_VISIBLE_DEVICES": str(gpu)}}} for gpu in gpus}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=_CLUSTER_LOGS)


class _ClusterClient(Client):
    """A client that shuts its cluster down when closed, as ``Client(n_workers=...)`` does."""

    def close(self, timeout: Any = no_default) -> Any:
        cluster = self.cluster
        out = super().close(timeout)
        if cluster is not None:
            cluster.close()
        return out
