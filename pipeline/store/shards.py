"""Distributed shard writing: many workers compute rows, exactly one task writes each shard.

Zarr v3 has no locks, and two tasks writing parts of one shard lose data silently (zarr-python
issues 3514, 3682). So rows are computed in parallel in pieces of ``rows_per_task``, and a single
write task per shard gathers its pieces and writes the whole shard region, reads it back, then
records its checksum, which marks it done. A resume redoes shards without a record and shards
whose rows no longer match theirs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from pipeline.store.features import FeatureStoreSpec, is_complete
from pipeline.store.remote import Options
from pipeline.store.writer import prepare_group, shards_todo, write_shard

if TYPE_CHECKING:
    import distributed


def _write_pieces(root_url: str, key: str, arrays: list[tuple[str, int]], shard_index: int,
                  storage_options: Options, *pieces: np.ndarray) -> int:
    """Write one shard of every array of a camera: the rows' columns, split by feature width."""
    if is_complete(root_url, key, storage_options):
        return shard_index  # another writer of this key (a shared bucket) finished and verified it
    rows = np.concatenate(pieces)
    start = 0
    for name, width in arrays:
        write_shard(root_url, key, name, shard_index, rows[:, start:start + width],
                    storage_options)
        start += width
    return shard_index


def write_shards_distributed(
    client: distributed.Client, root_url: str, spec: FeatureStoreSpec, camera: str,
    compute_rows: Callable[[int, int], np.ndarray], storage_options: Options = None,
    progress: bool = True, rows_per_task: int | None = None,
    resources: dict[str, float] | None = None,
) -> int:
    """Compute and write every shard of ``camera`` not yet done; returns how many were written.

    A group that is already complete is left alone (0): rebuilding one takes ``delete_group``.

    ``compute_rows(start, stop)`` returns the camera's rows with every feature's columns side by
    side (``spec.features`` order); it runs on workers, for pieces of at most ``rows_per_task`` rows
    (default: one chunk), so even a single shard keeps every worker busy. It is pickled to the
    workers, so it must be a module-level function or a picklable callable object; anything
    expensive it needs (a model) should be built once per worker process and cached there.
    ``resources`` are what each ``compute_rows`` task asks of a worker (``{"GPU": 1}``); the
    write tasks ask for nothing, so they never wait for a GPU.

    A failing shard does not stop the others: in-flight shards finish (and stay done, for
    resume), then the first failure's exception is raised.
    """
    from distributed import as_completed

    if prepare_group(root_url, spec, storage_options):
        return 0
    arrays = [(a.name, a.width) for a in spec.arrays(camera)]
    # A shard is redone whole, every feature array of the camera: they come from one forward.
    todo = sorted({i for name, _ in arrays
                   for i in shards_todo(root_url, spec.key, name, storage_options, verify=True)})
    step = rows_per_task or spec.rows_per_chunk
    run = uuid.uuid4().hex[:8]
    writes: dict[Any, int] = {}
    piece_rows: dict[Any, int] = {}
    for i in todo:
        start, stop = spec.shard_range(i)
        pieces = []
        for a in range(start, stop, step):
            piece = client.submit(compute_rows, a, min(a + step, stop), pure=False,
                                  key=f"rows-{spec.key[:8]}-{camera}-{a}-{run}",
                                  resources=resources)
            piece_rows[piece] = min(a + step, stop) - a
            pieces.append(piece)
        write = client.submit(_write_pieces, root_url, spec.key, arrays, i, storage_options,
                              *pieces, pure=False, key=f"shard-{spec.key[:8]}-{camera}-{i}-{run}")
        writes[write] = i
    failed: list[tuple[int, Any]] = []
    total = sum(piece_rows.values())
    with tqdm(total=total, desc=f"{camera}", unit="frame", disable=not progress) as bar:
        for fut in as_completed([*piece_rows, *writes]):
            if fut in writes and fut.status != "finished":
                failed.append((writes[fut], fut))
            elif fut in piece_rows and fut.status == "finished":
                bar.update(piece_rows[fut])
    if failed:
        index, fut = failed[0]
        try:
            fut.result()
        except Exception as exc:
            exc.add_note(f"{len(failed)} of {len(todo)} shards of {camera!r} failed (first: "
                         f"shard {index}); finished shards are recorded, so a rerun resumes")
            raise
    return len(todo) - len(failed)
