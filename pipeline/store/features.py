"""The feature store: one Zarr v3 group per content key, written shard by shard.

    <root>/<key>/               attrs: key, encoder, weights, preprocessing, precision,
                                episodes_key, versions, created, cameras, feature_dim, num_rows,
                                complete (set last, by ``finalize``)
      <camera>                  float16 (N, D), chunks (rows_per_chunk, D), sharded, zstd level 3
      episode_ends              int64 (E,) cumulative step counts, rows in episode order
      _shards_done/<camera>     bool (n_shards,), one chunk per shard

A shard is the unit of work and of resume. Zarr v3 has no locking, so two writers touching parts
of one shard lose data silently: each shard is written whole by one task, which then flips its
own element of ``_shards_done`` (its own chunk, so no read-modify-write race). A group reads as
done only once ``complete`` is set, after every shard is marked.

``<root>`` is a local path or an fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://...``); S3 endpoints and credentials come from ``storage_options`` or the usual AWS
environment variables.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.errors import GroupNotFoundError, ZarrUserWarning

from pipeline.errors import bad_store, unknown_name
from pipeline.store.remote import Options, fs_path, location, zarr_store

if TYPE_CHECKING:
    import dask.array

DONE = "_shards_done"
ENDS = "episode_ends"
LOW_DIM = "low_dim"  # per-row proprio, actions, rewards: enough to train without the frames
RESUME_FIX = "re-run the encode stage: it resumes, skipping finished shards"
_CHECKED_ATTRS = ("key", "cameras", "feature_dim", "num_rows")


@dataclass
class FeatureStoreSpec:
    key: str
    cameras: tuple[str, ...]
    feature_dim: int
    num_rows: int
    episode_ends: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    low_dim: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (num_rows, ...) array
    rows_per_chunk: int = 1024
    chunks_per_shard: int = 8

    @property
    def rows_per_shard(self) -> int:
        return self.rows_per_chunk * self.chunks_per_shard

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.rows_per_shard)

    def shard_range(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.num_shards:
            raise IndexError(f"shard {i} outside 0..{self.num_shards - 1}")
        start = i * self.rows_per_shard
        return start, min(start + self.rows_per_shard, self.num_rows)


def open_root(url: str, storage_options: Options = None) -> zarr.Group:
    """The root group (created if missing)."""
    return zarr.open_group(zarr_store(url, storage_options, read_only=False), mode="a")


def _open_group(url: str, key: str, storage_options: Options, write: bool) -> zarr.Group | None:
    store = zarr_store(url, storage_options, read_only=not write)
    try:
        # While a group is being written it has no consolidated metadata; a writer must not
        # trust a stale copy either, so only readers use it.
        return zarr.open_group(store, path=key, mode="r+" if write else "r",
                               use_consolidated=None if not write else False)
    except (FileNotFoundError, GroupNotFoundError):
        return None


def _open_array(url: str, path: str, storage_options: Options, write: bool) -> zarr.Array:
    store = zarr_store(url, storage_options, read_only=not write)
    try:
        return zarr.open_array(store, path=path, mode="r+" if write else "r")
    except FileNotFoundError:
        raise bad_store(location(url, path), "array does not exist",
                        "create the group with prepare_group first") from None


# --- writing ---------------------------------------------------------------------------------

def _array(group: zarr.Group, name: str) -> zarr.Array:
    arr = group[name]
    if not isinstance(arr, zarr.Array):
        raise bad_store(f"{group.store_path}/{name}", "is a group, not an array",
                        "delete the group and rebuild it")
    return arr


def _jsonable(obj: Any) -> Any:
    # Attributes are JSON; tuples and numpy scalars would otherwise fail or change type on read.
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _initial_attrs(spec: FeatureStoreSpec) -> dict[str, Any]:
    attrs = _jsonable(spec.attrs)
    attrs.setdefault("versions", {"zarr": zarr.__version__, "numpy": np.__version__})
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
                "delete that group (or run with FORCE=1) so it is rebuilt")


def _require_array(group: zarr.Group, name: str, where: str, shape: tuple[int, ...],
                   dtype: str, chunks: tuple[int, ...], shards: tuple[int, ...] | None) -> None:
    try:
        arr = group[name]
    except KeyError:
        group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                           compressors=ZstdCodec(level=3) if shards else "auto",
                           fill_value=0)
        return
    found = (getattr(arr, "shape", None), str(getattr(arr, "dtype", None)),
             getattr(arr, "chunks", None), getattr(arr, "shards", None))
    if found != (shape, dtype, chunks, shards):
        raise bad_store(f"{where}/{name}",
                        f"existing array has (shape, dtype, chunks, shards)={found}, expected "
                        f"{(shape, dtype, chunks, shards)}",
                        "delete that group (or run with FORCE=1) so it is rebuilt")


def prepare_group(root_url: str, spec: FeatureStoreSpec, storage_options: Options = None) -> None:
    """Create the group, arrays and attrs (complete=False); on resume, check they match."""
    where = location(root_url, spec.key)
    ends = np.asarray(spec.episode_ends, dtype=np.int64)
    if len(ends) and int(ends[-1]) != spec.num_rows:
        raise bad_store(where, f"episode_ends ends at {int(ends[-1])} but num_rows is "
                        f"{spec.num_rows}", "build the spec from the episode file's ends")
    group = _open_group(root_url, spec.key, storage_options, write=True)
    if group is None:
        root = open_root(root_url, storage_options)
        group = root.create_group(spec.key, attributes=_initial_attrs(spec))
    else:
        _check_attrs(group, spec, where)
        if group.attrs.get("complete") is True:
            old = np.asarray(_array(group, ENDS)[:])
            if not np.array_equal(old, ends):
                raise bad_store(where, "complete group has different episode_ends",
                                "delete that group (or run with FORCE=1) so it is rebuilt")
            return
    d = int(spec.feature_dim)
    for cam in spec.cameras:
        _require_array(group, cam, where, (spec.num_rows, d), "float16",
                       (spec.rows_per_chunk, d), (spec.rows_per_shard, d))
        _require_array(group, f"{DONE}/{cam}", where, (spec.num_shards,), "bool", (1,), None)
    # Small and cheap: rewriting them on every resume also repairs a write cut short by a crash.
    group.create_array(ENDS, data=ends, chunks=(max(len(ends), 1),), overwrite=True)
    for name, values in spec.low_dim.items():
        values = np.asarray(values)
        if len(values) != spec.num_rows:
            raise bad_store(f"{where}/{LOW_DIM}/{name}", f"has {len(values)} rows, expected "
                            f"{spec.num_rows}", "pass one row per frame, in episode order")
        group.create_array(f"{LOW_DIM}/{name}", data=values, overwrite=True)


def shards_todo(root_url: str, key: str, camera: str, storage_options: Options = None) -> list[int]:
    done = _open_array(root_url, f"{key}/{DONE}/{camera}", storage_options, write=False)
    return [int(i) for i in np.flatnonzero(~np.asarray(done[:], dtype=bool))]


def write_shard(root_url: str, key: str, camera: str, shard_index: int, features: np.ndarray,
                storage_options: Options = None) -> None:
    """Write one whole shard region, then mark it done. Safe to call from a dask worker."""
    arr = _open_array(root_url, f"{key}/{camera}", storage_options, write=True)
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
    # Zarr merges a shard write into the stored shard, reading it first; a leftover from a
    # crashed writer on a non-atomic backend would fail to decode and block the resume forever.
    fs, root = fs_path(root_url, storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(f"{root}/{key}/{camera}/{arr.metadata.encode_chunk_key((shard_index, 0))}")
    arr[start:stop] = feats
    done = _open_array(root_url, f"{key}/{DONE}/{camera}", storage_options, write=True)
    done[shard_index] = True


def finalize(root_url: str, key: str, storage_options: Options = None) -> None:
    """Check every shard is done, set ``complete`` and consolidate the group's metadata."""
    where = location(root_url, key)
    group = _open_group(root_url, key, storage_options, write=True)
    if group is None:
        raise bad_store(where, "no feature group to finalize", "run prepare_group first")
    attrs: dict[str, Any] = group.attrs.asdict()
    for cam in attrs["cameras"]:
        missing = shards_todo(root_url, key, cam, storage_options)
        if missing:
            raise bad_store(where, f"camera {cam!r} still misses shards {missing[:10]}"
                            f"{' ...' if len(missing) > 10 else ''}", RESUME_FIX)
    # Temporary files a killed local writer left behind are not part of the store.
    fs, root = fs_path(root_url, storage_options)
    stale = [p for p in fs.find(f"{root}/{key}") if p.endswith(".partial")]
    if stale:
        fs.rm(stale)
    group.attrs["complete"] = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata", ZarrUserWarning)
        zarr.consolidate_metadata(zarr_store(root_url, storage_options, read_only=False), path=key)


# --- reading ---------------------------------------------------------------------------------

def is_complete(root_url: str, key: str, storage_options: Options = None) -> bool:
    """Whether the group exists, is complete and belongs to ``key`` (one small read)."""
    group = _open_group(root_url, key, storage_options, write=False)
    return group is not None and group.attrs.get("complete") is True and \
        group.attrs.get("key") == key


class FeatureStore:
    """A complete feature group, read-only. Rows follow the episodes file order."""

    def __init__(self, root_url: str, key: str, group: zarr.Group,
                 storage_options: Options = None) -> None:
        self.root_url, self.key, self.group = root_url, key, group
        self.storage_options = storage_options
        self.attrs: dict[str, Any] = cast(dict[str, Any], group.attrs.asdict())
        self.cameras: tuple[str, ...] = tuple(self.attrs["cameras"])
        self.num_rows = int(self.attrs["num_rows"])
        self.feature_dim = int(self.attrs["feature_dim"])
        self.episode_ends: np.ndarray = np.asarray(_array(group, ENDS)[:], dtype=np.int64)

    @property
    def location(self) -> str:
        return location(self.root_url, self.key)

    def array(self, camera: str) -> zarr.Array:
        if camera not in self.cameras:
            raise unknown_name("camera", camera, self.cameras)
        return _array(self.group, camera)

    def low_dim(self, name: str) -> np.ndarray:
        """A per-row array stored beside the features (proprio, actions, rewards)."""
        try:
            return np.asarray(_array(self.group, f"{LOW_DIM}/{name}")[:])
        except KeyError:
            raise bad_store(self.location, f"has no {LOW_DIM}/{name} array",
                            "re-encode with a current version of the encode stage") from None

    def read(self, camera: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.asarray(self.array(camera)[start:stop], dtype=np.float16)

    def dask(self, camera: str) -> dask.array.Array:
        import dask.array as da

        arr = self.array(camera)
        # One dask chunk per shard: a shard is one object, so tasks never split a read of it.
        return da.from_zarr(arr, chunks=arr.shards or arr.chunks)

    def nbytes_stored(self) -> int:
        """Bytes the group takes on disk or in the bucket."""
        fs, root = fs_path(self.root_url, self.storage_options)
        return int(fs.du(f"{root}/{self.key}", total=True))

    def bytes_per_frame(self, camera: str | None = None) -> float:
        """Stored bytes per row of one camera (the mean over cameras when none is named)."""
        cams = [camera] if camera else list(self.cameras)
        fs, root = fs_path(self.root_url, self.storage_options)
        total = sum(int(fs.du(f"{root}/{self.key}/{self.array(c).basename}", total=True))
                    for c in cams)
        return total / max(self.num_rows * len(cams), 1)


def open_features(root_url: str, key: str, storage_options: Options = None) -> FeatureStore:
    """Open a complete group; refuse a missing, unfinished or foreign one with StoreError."""
    where = location(root_url, key)
    group = _open_group(root_url, key, storage_options, write=False)
    if group is None:
        raise bad_store(where, "no feature group for this key",
                        "run the encode stage, or `rrl pull KEY URL` from a shared store")
    found = group.attrs.get("key")
    if found != key:
        raise bad_store(where, f"group attrs say key {found!r}; a group whose attrs do not "
                        "match its key is refused", "delete it and re-run encode or pull again")
    if group.attrs.get("complete") is not True:
        raise bad_store(where, "group is incomplete (no complete marker): an interrupted write "
                        "never reads as done", RESUME_FIX)
    store = FeatureStore(root_url, key, group, storage_options)
    for cam in store.cameras:
        if store.array(cam).shape != (store.num_rows, store.feature_dim):
            raise bad_store(f"{where}/{cam}", f"shape {store.array(cam).shape} does not match "
                            "the group attrs", "delete it and re-run encode")
    return store


def summary(store: FeatureStore) -> dict[str, Any]:
    """What `rrl inspect` prints about a feature group."""
    a = store.attrs
    weights = a.get("weights") or {}
    out: dict[str, Any] = {
        "key": store.key, "location": store.location, "encoder": a.get("encoder"),
        "weights": weights, "random_weights": weights.get("kind") == "random",
        "preprocessing": a.get("preprocessing"), "precision": a.get("precision"),
        "episodes_key": a.get("episodes_key"), "created": a.get("created"),
        "cameras": {c: {"shape": list(store.array(c).shape), "chunks": list(store.array(c).chunks),
                        "shards": list(store.array(c).shards or ()),
                        "dtype": str(store.array(c).dtype)} for c in store.cameras},
        "episodes": len(store.episode_ends), "rows": store.num_rows,
        "feature_dim": store.feature_dim, "bytes": store.nbytes_stored(),
        "bytes_per_frame": round(store.bytes_per_frame(), 1), "versions": a.get("versions"),
    }
    if out["random_weights"]:
        out["warning"] = "RANDOM WEIGHTS: these features come from an untrained encoder"
    return out
