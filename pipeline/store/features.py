"""The feature store: one Zarr v3 group per content key, written shard by shard.

    <root>/<key>/               attrs: key, encoder, weights, preprocessing, precision,
                                episodes_key, versions, created, cameras, feature_dim, num_rows,
                                features ([name, width] pairs; absent: one pre_logits feature),
                                layers and pool (when encode.layers was set),
                                array_sha256 (episode_ends and low_dim arrays),
                                complete (set last, by ``finalize``, once verified)
      <camera>                  float16 (N, D), chunks (rows_per_chunk, D), sharded, zstd level 3:
                                the pooled pre-logits feature (the default, and every older group)
      <camera>@<feature>        float16 (N, D_feature), the same layout: one array per camera and
                                chosen layer (``layer3``, ``layer-1.cls``; pipeline/encoders/
                                layers.py), all rows of all of them from one forward pass
      episode_ends              int64 (E,) cumulative step counts, rows in episode order
      low_dim/<name>            per-row proprio, actions, rewards
      _shard_sha256/<array>     uint8 (n_shards, 32), one uncompressed 32-byte chunk per shard:
                                sha256 of that shard's rows (see ``rows_sha256``); all zeros
                                (the fill value, no object) means the shard is not done

``feature_dim`` is the width of one camera's features, all of them concatenated (what a policy
reading every stored feature gets per camera).

A shard is the unit of work, of resume and of verification. Zarr v3 has no locking, so two
writers touching parts of one shard lose data silently: each shard is written whole by one task,
which reads it back and only then writes its own checksum record (its own chunk, so no
read-modify-write race). The record is the shard's done marker: a shard whose record is missing,
or whose rows no longer hash to it, is not done. A group reads as done only once ``complete`` is
set, after every shard has been checked against its record.

This module holds the layout and reading; ``writer`` writes groups, ``verify`` checks them,
``copy`` moves them between stores. ``<root>`` is a local path or an fsspec URL
(``s3://bucket/prefix``, ``gs://...``, ``memory://...``); S3 endpoints and credentials come from
``storage_options`` or the usual AWS environment variables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import zarr
from zarr.errors import GroupNotFoundError

from pipeline.errors import StoreError, bad_store, unknown_name
from pipeline.store.remote import Options, fs_path, location, zarr_store

if TYPE_CHECKING:
    import dask.array

SHARD_SHA256 = "_shard_sha256"
ENDS = "episode_ends"
LOW_DIM = "low_dim"  # per-row proprio, actions, rewards: enough to train without the frames
ROWS_CHECKSUM = "sha256 of the shard's rows as little-endian float16, row-major"
RESUME_FIX = "re-run the encode stage: it resumes, recomputing shards not done or not verified"
FORCE_FIX = "re-encode it: run the encode stage with FORCE=1 (and STORE= this store)"
DAMAGED_FIX = ("re-encode it: run the encode stage with FORCE=1 and the same settings (`rrl "
               "verify` lists every damaged shard first); a group pulled from a shared store can "
               "be pulled again instead")


PRE_LOGITS = "pre_logits"  # the default feature (pipeline.encoders.layers.PRE_LOGITS)


def array_name(camera: str, feature: str) -> str:
    """The array of one camera's feature: the camera's name for the default feature."""
    return camera if feature == PRE_LOGITS else f"{camera}@{feature}"


@dataclass(frozen=True)
class FeatureArray:
    name: str  # array path inside the group
    camera: str
    feature: str
    width: int


def feature_widths(attrs: dict[str, Any]) -> dict[str, int]:
    """Stored features and their widths, in order; a group from before layers: one pre_logits."""
    pairs = attrs.get("features")
    if not pairs:
        return {PRE_LOGITS: int(attrs["feature_dim"])}
    return {str(name): int(width) for name, width in pairs}


def feature_arrays(attrs: dict[str, Any]) -> list[FeatureArray]:
    """Every feature array of a group, camera by camera."""
    widths = feature_widths(attrs)
    return [FeatureArray(array_name(cam, f), cam, f, w) for cam in attrs["cameras"]
            for f, w in widths.items()]


@dataclass
class FeatureStoreSpec:
    key: str
    cameras: tuple[str, ...]
    feature_dim: int  # one camera's width: all features concatenated
    num_rows: int
    episode_ends: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    low_dim: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (num_rows, ...) array
    rows_per_chunk: int = 1024
    chunks_per_shard: int = 8
    # name -> width, in the order compute_rows concatenates them; None: one pre_logits feature
    features: dict[str, int] | None = None

    @property
    def widths(self) -> dict[str, int]:
        return dict(self.features) if self.features else {PRE_LOGITS: self.feature_dim}

    def arrays(self, camera: str | None = None) -> list[FeatureArray]:
        return [FeatureArray(array_name(c, f), c, f, w) for c in self.cameras
                for f, w in self.widths.items() if camera in (None, c)]

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


def rows_sha256(rows: np.ndarray) -> bytes:
    """The checksum of a shard: sha256 of its rows as little-endian float16, row-major.

    Decoded rows rather than the stored object's bytes: it checks what a reader gets, through
    the array's metadata and codec, and a missing shard object (which zarr silently reads as
    zero rows) fails it like a corrupt one.
    """
    # Hashed through the buffer protocol: no copy of the rows (a shard is megabytes).
    return hashlib.sha256(np.ascontiguousarray(rows, dtype="<f2").data.cast("B")).digest()


def array_sha256(values: np.ndarray) -> str:
    """Checksum of a small whole array (episode ends, low-dim rows): dtype, shape and bytes."""
    values = np.ascontiguousarray(values)
    digest = hashlib.sha256(f"{values.dtype.str}|{values.shape}|".encode())
    digest.update(values.tobytes())
    return digest.hexdigest()


ATTRS_SHA256 = "attrs_sha256"
_UNHASHED_ATTRS = (ATTRS_SHA256, "complete")


def attrs_sha256(attrs: dict[str, Any]) -> str:
    """Checksum of a group's attrs as JSON (sorted keys), leaving out itself and ``complete``.

    The attrs say how to rebuild the encoder (weights, preprocessing) and what the arrays hold,
    so a changed digit there is as wrong as a changed shard, and no shard checksum sees it."""
    kept = {k: v for k, v in attrs.items() if k not in _UNHASHED_ATTRS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def attrs_problem(attrs: dict[str, Any]) -> str | None:
    """Why the attrs do not match their recorded checksum (None: they do, or none is recorded)."""
    recorded = attrs.get(ATTRS_SHA256)
    if recorded is None or recorded == attrs_sha256(attrs):
        return None
    return ("the group attrs (its zarr.json) no longer match the attrs_sha256 recorded when it "
            "was finished: the file was edited or damaged")


def open_root(url: str, storage_options: Options = None) -> zarr.Group:
    """The root group (created if missing)."""
    return zarr.open_group(zarr_store(url, storage_options, read_only=False), mode="a")


def open_group(url: str, key: str, storage_options: Options, write: bool) -> zarr.Group | None:
    """The group of ``key``, or None when it has no metadata there."""
    store = zarr_store(url, storage_options, read_only=not write)
    try:
        # While a group is being written it has no consolidated metadata; a writer must not
        # trust a stale copy either, so only readers use it.
        return zarr.open_group(store, path=key, mode="r+" if write else "r",
                               use_consolidated=None if not write else False)
    except (FileNotFoundError, GroupNotFoundError):
        return None
    except json.JSONDecodeError:
        # An unreadable group zarr.json (a write cut short): no group, so it is never used and
        # a rebuild or a second copy replaces it.
        return None


def open_array(url: str, path: str, storage_options: Options, write: bool) -> zarr.Array:
    """An array by path; its parent group's metadata need not exist (a copy writes it last)."""
    store = zarr_store(url, storage_options, read_only=not write)
    try:
        return zarr.open_array(store, path=path, mode="r+" if write else "r")
    except FileNotFoundError:
        raise bad_store(location(url, path), "array does not exist",
                        "create the group with prepare_group first") from None


def child_array(group: zarr.Group, name: str) -> zarr.Array:
    arr = group[name]
    if not isinstance(arr, zarr.Array):
        raise bad_store(f"{group.store_path}/{name}", "is a group, not an array",
                        "delete the group and rebuild it")
    return arr


def recorded_digests(url: str, key: str, camera: str, storage_options: Options) -> np.ndarray:
    """The (n_shards, 32) checksum records of one camera; a row of zeros: shard not done.

    A record object that is damaged (truncated, wrong size) reads as zeros too: its shard is
    then not done, which is what a resume or a verification must conclude.
    """
    path = f"{key}/{SHARD_SHA256}/{camera}"
    try:
        arr = zarr.open_array(zarr_store(url, storage_options, read_only=True), path=path, mode="r")
    except FileNotFoundError:
        raise unverifiable(location(url, key), camera) from None
    try:
        return np.asarray(arr[:], dtype=np.uint8)
    except OSError:
        raise  # the store is unreachable: that says nothing about the records
    except Exception:  # one record object does not decode: read them one by one
        out = np.zeros(arr.shape, dtype=np.uint8)
        for i in range(arr.shape[0]):
            with contextlib.suppress(OSError, ValueError, RuntimeError, TypeError):
                out[i] = np.asarray(arr[i], dtype=np.uint8)
        return out


def rows_per_shard(arr: zarr.Array) -> int:
    return int(arr.shards[0] if arr.shards else arr.chunks[0])


def damaged(where: str, problem: str) -> StoreError:
    """The error for a group whose data no longer matches what was recorded when it was written."""
    return bad_store(where, f"{problem}; the group is damaged (a lost, truncated or altered "
                     "file) and nothing was read from it", DAMAGED_FIX)


def unverifiable(where: str, camera: str) -> StoreError:
    return bad_store(where, f"camera {camera!r} has no per-shard checksums ({SHARD_SHA256}/"
                     f"{camera}): the group was written before checksums existed (or lost "
                     "them), so its data cannot be verified and it never reads as done",
                     FORCE_FIX)


# --- reading ---------------------------------------------------------------------------------

def is_complete(root_url: str, key: str, storage_options: Options = None) -> bool:
    """Whether the group exists, is complete and belongs to ``key`` (one small read)."""
    group = open_group(root_url, key, storage_options, write=False)
    return group is not None and group.attrs.get("complete") is True and \
        group.attrs.get("key") == key


class FeatureStore:
    """A complete feature group, read-only. Rows follow the episodes file order.

    Every read is checked against the checksums recorded when the group was written: the
    shards a ``read`` touches (each once per instance), episode ends and low-dim arrays against
    ``array_sha256``. Zarr returns the fill value for a missing shard object and a flipped byte
    may decode to NaN, so without this a damaged group would be trained on silently.
    """

    def __init__(self, root_url: str, key: str, group: zarr.Group,
                 storage_options: Options = None) -> None:
        self.root_url, self.key, self.group = root_url, key, group
        self.storage_options = storage_options
        self.attrs: dict[str, Any] = cast(dict[str, Any], group.attrs.asdict())
        self.cameras: tuple[str, ...] = tuple(self.attrs["cameras"])
        self.num_rows = int(self.attrs["num_rows"])
        self.feature_dim = int(self.attrs["feature_dim"])
        self.features: dict[str, int] = feature_widths(self.attrs)
        self._digests: dict[str, np.ndarray] = {}  # array name -> its shards' recorded sha256
        self._verified: dict[str, set[int]] = {}  # array name -> shards checked so far
        self.episode_ends: np.ndarray = self._checked_array(ENDS).astype(np.int64)

    @property
    def location(self) -> str:
        return location(self.root_url, self.key)

    def array(self, camera: str, feature: str | None = None) -> zarr.Array:
        """One camera's array of ``feature`` (None: the group's only feature)."""
        return child_array(self.group, self.array_name(camera, feature))

    def array_name(self, camera: str, feature: str | None = None) -> str:
        """The path in the group of one camera's ``feature`` (None: the group's only feature)."""
        if camera not in self.cameras:
            raise unknown_name("camera", camera, self.cameras)
        if feature is None:
            if len(self.features) > 1:
                raise bad_store(self.location, f"holds {len(self.features)} features per camera "
                                f"({', '.join(self.features)})", "name the one to read "
                                "(FEATURES=)")
            feature = next(iter(self.features))
        if feature not in self.features:
            raise unknown_name(f"feature of {self.location}", feature, list(self.features))
        return array_name(camera, feature)

    def read_features(self, camera: str, names: list[str]) -> np.ndarray:
        """One camera's ``names`` features, concatenated in that order, float16."""
        return np.concatenate([self.read(camera, feature=n) for n in names], axis=1)

    def low_dim(self, name: str) -> np.ndarray:
        """A per-row array stored beside the features (proprio, actions, rewards), checked."""
        if f"{LOW_DIM}/{name}" not in (self.attrs.get("array_sha256") or {}):
            raise bad_store(self.location, f"has no {LOW_DIM}/{name} array",
                            "re-encode with a current version of the encode stage")
        return self._checked_array(f"{LOW_DIM}/{name}")

    def _checked_array(self, name: str) -> np.ndarray:
        expected = (self.attrs.get("array_sha256") or {}).get(name)
        if expected is None:
            raise bad_store(self.location, f"{name} has no recorded checksum: the group was "
                            "written before checksums existed, so it cannot be verified", FORCE_FIX)
        try:
            values = np.asarray(child_array(self.group, name)[:])
        except (KeyError, FileNotFoundError):
            raise damaged(self.location, f"array {name} is missing") from None
        except OSError:
            raise
        except Exception as exc:  # a codec error: the object is damaged
            raise damaged(self.location, f"array {name} cannot be decoded "
                          f"({type(exc).__name__})") from None
        if array_sha256(values) != expected:
            raise damaged(self.location, f"array {name} does not match the checksum recorded "
                          "when it was written")
        return values

    def read(self, camera: str, start: int = 0, stop: int | None = None,
             feature: str | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one camera's ``feature``, after checking every shard they lie in."""
        name = self.array_name(camera, feature)
        arr = child_array(self.group, name)
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        if not 0 <= start <= stop:
            raise IndexError(f"rows {start}:{stop} outside 0..{self.num_rows}")
        rows = rows_per_shard(arr)
        first, last = start // rows, -(-stop // rows)
        lo, hi = first * rows, min(last * rows, self.num_rows)
        try:
            block = np.asarray(arr[lo:hi], dtype=np.float16)
        except OSError:
            raise  # the store is unreachable: that says nothing about the data
        except Exception:  # a codec error: read shard by shard to name the damaged one
            block = np.concatenate([self._decode_shard(arr, name, i, rows)
                                    for i in range(first, last)])
        self._check_shards(name, block, first, last, rows)
        return block[start - lo:stop - lo]

    def dask(self, camera: str, feature: str | None = None) -> dask.array.Array:
        """One camera's feature as a lazy dask array, one block per shard, each checked as read."""
        import dask
        import dask.array as da

        arr = self.array(camera, feature)
        rows, width = rows_per_shard(arr), int(arr.shape[1])
        return da.concatenate([
            da.from_delayed(dask.delayed(self.read)(camera, a, min(a + rows, self.num_rows), feature),
                            shape=(min(a + rows, self.num_rows) - a, width), dtype=np.float16)
            for a in range(0, self.num_rows, rows)])

    def _decode_shard(self, arr: zarr.Array, name: str, i: int, rows: int) -> np.ndarray:
        stop = min((i + 1) * rows, self.num_rows)
        try:
            return np.asarray(arr[i * rows:stop], dtype=np.float16)
        except OSError:
            raise
        except Exception as exc:
            raise damaged(f"{self.location}/{name}", f"shard {i} (rows {i * rows}..{stop - 1}) "
                          f"cannot be decoded ({type(exc).__name__})") from None

    def _check_shards(self, name: str, block: np.ndarray, first: int, last: int,
                      rows: int) -> None:
        done = self._verified.setdefault(name, set())
        if name not in self._digests:
            self._digests[name] = recorded_digests(self.root_url, self.key, name,
                                                   self.storage_options)
        digests = self._digests[name]
        for i in range(first, last):
            if i in done:
                continue
            part = block[(i - first) * rows:(i - first + 1) * rows]
            where = f"{self.location}/{name}"
            span = f"shard {i} (rows {i * rows}..{i * rows + len(part) - 1})"
            if i >= len(digests) or not digests[i].any():
                raise damaged(where, f"{span} has no checksum record (lost, or never finished)")
            if rows_sha256(part) != digests[i].tobytes():
                raise damaged(where, f"{span} does not match the checksum recorded when it was "
                              "written")
            done.add(i)

    def nbytes_stored(self) -> int:
        """Bytes the group takes on disk or in the bucket."""
        fs, root = fs_path(self.root_url, self.storage_options)
        return int(fs.du(f"{root}/{self.key}", total=True))

    def bytes_per_frame(self, camera: str | None = None) -> float:
        """Stored bytes per row of one camera (the mean over cameras when none is named)."""
        cams = [camera] if camera else list(self.cameras)
        fs, root = fs_path(self.root_url, self.storage_options)
        total = sum(int(fs.du(f"{root}/{self.key}/{a.name}", total=True))
                    for a in feature_arrays(self.attrs) if a.camera in cams)
        return total / max(self.num_rows * len(cams), 1)


def open_features(root_url: str, key: str, storage_options: Options = None) -> FeatureStore:
    """Open a complete group; refuse a missing, unfinished, foreign or unverifiable one."""
    where = location(root_url, key)
    group = open_group(root_url, key, storage_options, write=False)
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
    problem = attrs_problem(group.attrs.asdict())
    if problem is not None:
        raise bad_store(where, problem, DAMAGED_FIX)
    store = FeatureStore(root_url, key, group, storage_options)
    for a in feature_arrays(store.attrs):
        arr = store.array(a.camera, a.feature)
        if arr.shape != (store.num_rows, a.width):
            raise bad_store(f"{where}/{a.name}", f"shape {arr.shape} does not match "
                            "the group attrs", "delete it and re-run encode")
        if f"{SHARD_SHA256}/{a.name}" not in group:  # consolidated metadata: no extra read
            raise unverifiable(where, a.name)
    return store
