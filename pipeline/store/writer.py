"""Writing a feature group: prepare it, write whole shards with their checksum records, finalize.

The order inside one shard is what makes a crash at any point safe: the shard's old record goes
first, then its data, then a read-back, and only then its new record. ``finalize`` checks every
shard against its record before it sets ``complete``, so a group never reads as done with rows
that are not the ones written.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from datetime import UTC, datetime
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError, ZarrUserWarning

from pipeline.errors import bad_store
from pipeline.store.features import (
    ATTRS_SHA256,
    ENDS,
    LOW_DIM,
    RESUME_FIX,
    ROWS_CHECKSUM,
    SHARD_SHA256,
    FeatureStoreSpec,
    array_sha256,
    attrs_sha256,
    child_array,
    feature_arrays,
    open_array,
    open_group,
    open_root,
    recorded_digests,
    rows_sha256,
)
from pipeline.store.remote import Options, fs_path, location, zarr_store
from pipeline.store.verify import VerifyReport, failing_shards, verify_contents

_CHECKED_ATTRS = ("key", "cameras", "feature_dim", "num_rows")
_REBUILD_FIX = "delete that group (or run with FORCE=1) so it is rebuilt"


def _jsonable(obj: Any) -> Any:
    # Attributes are JSON; tuples and numpy scalars would otherwise fail or change type on read.
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _initial_attrs(spec: FeatureStoreSpec) -> dict[str, Any]:
    attrs = _jsonable(spec.attrs)
    attrs.setdefault("versions", {"zarr": zarr.__version__, "numpy": np.__version__})
    if spec.features:
        attrs["features"] = [[name, int(width)] for name, width in spec.features.items()]
    attrs.update(key=spec.key, cameras=list(spec.cameras), feature_dim=int(spec.feature_dim),
                 num_rows=int(spec.num_rows),
                 created=datetime.now(UTC).isoformat(timespec="seconds"), complete=False)
    return attrs


def _check_attrs(group: zarr.Group, spec: FeatureStoreSpec, where: str) -> None:
    attrs = group.attrs.asdict()
    expected = {"key": spec.key, "cameras": list(spec.cameras),
                "feature_dim": int(spec.feature_dim), "num_rows": int(spec.num_rows)}
    for name in _CHECKED_ATTRS:
        if attrs.get(name) != expected[name]:
            raise bad_store(
                where, f"existing group has {name}={attrs.get(name)!r} but this run expects "
                f"{expected[name]!r}; a group whose attrs do not match its key is refused",
                _REBUILD_FIX)


def _require_array(group: zarr.Group, name: str, where: str, shape: tuple[int, ...],
                   dtype: str, chunks: tuple[int, ...], shards: tuple[int, ...] | None,
                   attributes: dict[str, Any] | None = None) -> None:
    try:
        arr = group[name]
    except KeyError:
        try:
            # Checksum records stay uncompressed: each chunk object is exactly the 32-byte digest.
            group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                               compressors=ZstdCodec(level=3) if shards else None,
                               fill_value=0, attributes=attributes)
            return
        except ContainsArrayError:  # another writer of the key (a shared bucket) made it first
            arr = group[name]
    found = (getattr(arr, "shape", None), str(getattr(arr, "dtype", None)),
             getattr(arr, "chunks", None), getattr(arr, "shards", None))
    if found != (shape, dtype, chunks, shards):
        raise bad_store(f"{where}/{name}",
                        f"existing array has (shape, dtype, chunks, shards)={found}, expected "
                        f"{(shape, dtype, chunks, shards)}", _REBUILD_FIX)


def delete_group(root_url: str, key: str, storage_options: Options = None) -> bool:
    """Remove everything stored under ``key``; whether anything was there."""
    fs, root = fs_path(root_url, storage_options)
    path = f"{root}/{key}"
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return False
    fs.rm(path, recursive=True)
    fs.invalidate_cache(path)
    return True


def prepare_group(root_url: str, spec: FeatureStoreSpec, storage_options: Options = None) -> bool:
    """Create the group, arrays and attrs (complete=False); on resume, check they match.

    Returns whether the group is already complete: then nothing is touched, since a complete
    group is only ever rebuilt whole (``delete_group`` first, as FORCE=1 does).
    """
    where = location(root_url, spec.key)
    ends = np.asarray(spec.episode_ends, dtype=np.int64)
    if len(ends) and int(ends[-1]) != spec.num_rows:
        raise bad_store(where, f"episode_ends ends at {int(ends[-1])} but num_rows is "
                        f"{spec.num_rows}", "build the spec from the episode file's ends")
    group = open_group(root_url, spec.key, storage_options, write=True)
    if group is None:
        # Our own writes create the group's metadata first, so objects under the key without it
        # are leftovers of an interrupted copy or of a half-deleted group: none of their records
        # can be trusted, so the group starts empty.
        delete_group(root_url, spec.key, storage_options)
        root = open_root(root_url, storage_options)
        try:
            group = root.create_group(spec.key, attributes=_initial_attrs(spec))
        except ContainsGroupError:  # another writer of the same key (a shared bucket) was first
            group = open_group(root_url, spec.key, storage_options, write=True)
            if group is None:
                raise bad_store(where, "the group appeared and vanished while it was created",
                                f"another process is rebuilding it; {RESUME_FIX}") from None
            _check_attrs(group, spec, where)
    else:
        _check_attrs(group, spec, where)
        if group.attrs.get("complete") is True:
            old = np.asarray(child_array(group, ENDS)[:])
            if not np.array_equal(old, ends):
                raise bad_store(where, "complete group has different episode_ends", _REBUILD_FIX)
            return True
    for a in spec.arrays():
        d = int(a.width)
        _require_array(group, a.name, where, (spec.num_rows, d), "float16",
                       (spec.rows_per_chunk, d), (spec.rows_per_shard, d))
        _require_array(group, f"{SHARD_SHA256}/{a.name}", where, (spec.num_shards, 32), "uint8",
                       (1, 32), None, {"checksum": ROWS_CHECKSUM})
    # Small and cheap: rewriting them on every resume also repairs a write cut short by a crash.
    sums = {ENDS: array_sha256(ends)}
    group.create_array(ENDS, data=ends, chunks=(max(len(ends), 1),), overwrite=True)
    for name, values in spec.low_dim.items():
        values = np.asarray(values)
        if len(values) != spec.num_rows:
            raise bad_store(f"{where}/{LOW_DIM}/{name}", f"has {len(values)} rows, expected "
                            f"{spec.num_rows}", "pass one row per frame, in episode order")
        group.create_array(f"{LOW_DIM}/{name}", data=values, overwrite=True)
        sums[f"{LOW_DIM}/{name}"] = array_sha256(values)
    group.attrs["array_sha256"] = sums
    return False


def shards_todo(root_url: str, key: str, camera: str, storage_options: Options = None,
                verify: bool = False) -> list[int]:
    """Shards with no checksum record; with ``verify``, also those whose rows fail theirs."""
    done = recorded_digests(root_url, key, camera, storage_options).any(axis=1)
    todo = [int(i) for i in np.flatnonzero(~done)]
    if verify and done.any():
        recorded = [int(i) for i in np.flatnonzero(done)]
        todo += failing_shards(root_url, key, camera, recorded, storage_options)
    return sorted(todo)


def write_shard(root_url: str, key: str, camera: str, shard_index: int, features: np.ndarray,
                storage_options: Options = None) -> None:
    """Write one whole shard region, read it back, then record its checksum (= mark it done).

    Safe to call from a dask worker: it touches only this shard's data and record objects.
    """
    arr = open_array(root_url, f"{key}/{camera}", storage_options, write=True)
    rows = arr.shards[0] if arr.shards else arr.chunks[0]
    start, stop = shard_index * rows, min((shard_index + 1) * rows, arr.shape[0])
    where = f"{location(root_url, key)}/{camera} shard {shard_index}"
    if start >= arr.shape[0] or shard_index < 0:
        raise bad_store(where, f"shard index outside 0..{-(-arr.shape[0] // rows) - 1}",
                        "pass an index from shards_todo")
    if features.shape != (stop - start, arr.shape[1]):
        raise bad_store(where, f"features have shape {features.shape}, expected "
                        f"{(stop - start, arr.shape[1])}", "compute exactly the shard's rows")
    with np.errstate(over="ignore"):  # overflow is reported just below, as a StoreError
        feats = np.asarray(features, dtype=np.float16)
    if not np.isfinite(feats).all():
        raise bad_store(where, "features contain NaN or inf (after the cast to float16)",
                        "check the encoder output; values must stay within ±65504")
    record = open_array(root_url, f"{key}/{SHARD_SHA256}/{camera}", storage_options, write=True)
    fs, root = fs_path(root_url, storage_options)
    # The old record goes first, so a crash below never leaves a record beside other data.
    # Zarr merges a shard write into the stored shard, reading it first; a leftover from a
    # crashed writer on a non-atomic backend would fail to decode and block the resume forever.
    for name, arr_path in ((record.metadata.encode_chunk_key((shard_index, 0)), record.path),
                           (arr.metadata.encode_chunk_key((shard_index, 0)), arr.path)):
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(f"{root}/{arr_path}/{name}")
    arr[start:stop] = feats
    digest = rows_sha256(feats)
    if rows_sha256(np.asarray(arr[start:stop])) != digest:
        raise bad_store(where, "rows read back differ from the rows just written, so the shard "
                        "is not marked done", f"check the store's health (disk, bucket); {RESUME_FIX}")
    record[shard_index] = np.frombuffer(digest, dtype=np.uint8)


def finalize(root_url: str, key: str, storage_options: Options = None) -> VerifyReport:
    """Verify every shard against its record, then set ``complete`` and consolidate metadata."""
    where = location(root_url, key)
    group = open_group(root_url, key, storage_options, write=True)
    if group is None:
        raise bad_store(where, "no feature group to finalize", "run prepare_group first")
    attrs: dict[str, Any] = group.attrs.asdict()
    for a in feature_arrays(attrs):
        missing = shards_todo(root_url, key, a.name, storage_options)
        if missing:
            raise bad_store(where, f"array {a.name!r} still misses shards {missing[:10]}"
                            f"{' ...' if len(missing) > 10 else ''}", RESUME_FIX)
    # Temporary files a killed local writer left behind are not part of the store.
    fs, root = fs_path(root_url, storage_options)
    stale = [p for p in fs.find(f"{root}/{key}") if p.endswith(".partial")]
    if stale:
        fs.rm(stale)
    report = verify_contents(root_url, key, attrs, storage_options).raise_if_bad(RESUME_FIX)
    group.attrs.update({ATTRS_SHA256: attrs_sha256(attrs), "complete": True})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", ZarrUserWarning)
        zarr.consolidate_metadata(zarr_store(root_url, storage_options, read_only=False), path=key)
    return report
