"""Checking a feature group against the checksums recorded when it was written.

Every shard's rows are read back and hashed (``features.rows_sha256``) and compared with the
shard's record; episode ends and low-dim arrays against the ``array_sha256`` attrs. Copies and
adoptions run this before a group may read as complete at its destination, and ``finalize`` runs
it before setting ``complete``. Rows that are all zero are counted and located by episode: they
are allowed (a black frame may encode to zeros) but are what a lost shard used to look like.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError, bad_store
from pipeline.store.features import (
    ENDS,
    FORCE_FIX,
    LOW_DIM,
    SHARD_SHA256,
    array_sha256,
    attrs_problem,
    feature_arrays,
    open_array,
    open_group,
    recorded_digests,
    rows_per_shard,
    rows_sha256,
)
from pipeline.store.remote import Options, fs_path, location

_READ_BYTES = 64 << 20  # decoded bytes read at once: zarr fetches the shards of a block together
_SHOWN = 5


@dataclass
class VerifyReport:
    """What ``verify_group`` found. ``ok`` means every check passed; zero rows only warn."""

    location: str
    key: str
    shards_total: int = 0
    shards_verified: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    zero_rows: dict[str, int] = field(default_factory=dict)  # camera -> rows that are all zero
    zero_row_episodes: dict[str, list[int]] = field(default_factory=dict)  # camera -> episodes
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what a copy left behind (weights files)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_text(self) -> str:
        more = len(self.problems) - _SHOWN
        return "; ".join(self.problems[:_SHOWN]) + (f"; and {more} more" if more > 0 else "")

    def raise_if_bad(self, fix: str) -> VerifyReport:
        if not self.ok:
            raise bad_store(self.location, f"verification failed: {self.problem_text()}", fix)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"location": self.location, "key": self.key, "ok": self.ok,
                "shards_verified": self.shards_verified,
                "shards_total": self.shards_total, "problems": list(self.problems),
                "zero_rows": dict(self.zero_rows),
                "zero_row_episodes": {c: list(e) for c, e in self.zero_row_episodes.items()},
                "seconds": round(self.seconds, 3), **({"notes": list(self.notes)} if self.notes else {})}


def verify_group(root_url: str, key: str, storage_options: Options = None) -> VerifyReport:
    """Check the group ``key``: attrs, completeness, every shard and small array.

    A missing group, or one without checksum records (written before they existed), raises
    StoreError: nothing unverifiable can pass. Everything else found wrong is listed in the
    report's ``problems``.
    """
    where = location(root_url, key)
    group = open_group(root_url, key, storage_options, write=False)
    if group is None:
        raise bad_store(where, "no feature group for this key", "check the key and the store")
    attrs = group.attrs.asdict()
    report = verify_contents(root_url, key, attrs, storage_options)
    changed = attrs_problem(attrs)
    if changed is not None:
        report.problems.insert(0, changed)
    if attrs.get("key") != key:  # first: the attrs of another key also fail their checksum
        report.problems.insert(0, f"group attrs say key {attrs.get('key')!r}, not this key")
    if attrs.get("complete") is not True:
        report.problems.append("group is not marked complete (an unfinished write or copy)")
    return report


def verify_contents(root_url: str, key: str, attrs: dict[str, Any],
                    storage_options: Options = None) -> VerifyReport:
    """Check the arrays under ``key`` against ``attrs`` (which may come from another copy)."""
    started = time.perf_counter()
    report = VerifyReport(location(root_url, key), key)
    try:
        arrays = feature_arrays(attrs)
        num_rows = int(attrs["num_rows"])
    except (KeyError, TypeError, ValueError):
        raise bad_store(report.location, "group attrs lack cameras, num_rows or feature_dim",
                        FORCE_FIX) from None
    sums = attrs.get("array_sha256")
    if not isinstance(sums, dict) or ENDS not in sums:
        raise bad_store(report.location, "group has no array_sha256 attrs: it was written "
                        "before checksums existed, so it cannot be verified", FORCE_FIX)
    ends = _check_small_arrays(root_url, key, sums, storage_options, report)
    if ends is not None and (len(ends) == 0 or int(ends[-1]) != num_rows):
        report.problems.append(f"{ENDS} does not end at num_rows={num_rows}")
    for a in arrays:  # one per camera, or per camera and stored layer
        _check_camera(root_url, key, a.name, (num_rows, a.width), ends, storage_options, report)
    report.rows = num_rows
    report.seconds = time.perf_counter() - started
    return report


def failing_shards(root_url: str, key: str, camera: str, shards: list[int],
                   storage_options: Options = None) -> list[int]:
    """Which of ``shards`` (all recorded as done) do not match their record, or do not decode."""
    digests = recorded_digests(root_url, key, camera, storage_options)
    arr = open_array(root_url, f"{key}/{camera}", storage_options, write=False)
    rows = rows_per_shard(arr)
    return [i for i in shards if not _matches(_decoded(arr, i, rows), digests[i])]


def _matches(rows: np.ndarray | Exception, digest: np.ndarray) -> bool:
    return not isinstance(rows, Exception) and rows_sha256(rows) == digest.tobytes()


def _decoded(arr: zarr.Array, i: int, rows: int) -> np.ndarray | Exception:
    """Shard ``i``'s rows, or the error that stopped them decoding."""
    try:
        return np.asarray(arr[i * rows:(i + 1) * rows])
    except OSError:
        raise  # the store is unreachable: that says nothing about the data
    except Exception as exc:  # a codec error: the shard object is damaged
        return exc


def _shards(arr: zarr.Array, first: int, last: int,
            rows: int) -> Iterator[tuple[int, np.ndarray | Exception]]:
    """Shards ``first..last-1``, read together (zarr fetches them concurrently)."""
    try:
        block = np.asarray(arr[first * rows:last * rows])
    except OSError:
        raise
    except Exception:  # one of them does not decode: read them one by one to say which
        yield from ((i, _decoded(arr, i, rows)) for i in range(first, last))
        return
    yield from ((i, block[(i - first) * rows:(i - first + 1) * rows]) for i in range(first, last))


def _check_small_arrays(root_url: str, key: str, sums: dict[str, Any], storage_options: Options,
                        report: VerifyReport) -> np.ndarray | None:
    ends = None
    for name, expected in sorted(sums.items()):
        if name != ENDS and not name.startswith(f"{LOW_DIM}/"):
            continue
        try:
            values = np.asarray(open_array(root_url, f"{key}/{name}", storage_options,
                                           write=False)[:])
        except StoreError:
            report.problems.append(f"{name} is missing")
            continue
        if array_sha256(values) != expected:
            report.problems.append(f"{name} does not match its recorded checksum")
        elif name == ENDS:
            ends = values.astype(np.int64)
    return ends


def _check_camera(root_url: str, key: str, camera: str, shape: tuple[int, int],
                  ends: np.ndarray | None, storage_options: Options,
                  report: VerifyReport) -> None:
    digests = recorded_digests(root_url, key, camera, storage_options)  # none: StoreError
    try:
        arr = open_array(root_url, f"{key}/{camera}", storage_options, write=False)
    except StoreError:
        report.problems.append(f"camera {camera!r}: array is missing")
        return
    if arr.shape != shape or arr.dtype != np.float16:
        report.problems.append(f"camera {camera!r}: array is {arr.dtype} {arr.shape}, the "
                               f"attrs say float16 {shape}")
        return
    rows = rows_per_shard(arr)
    count = -(-shape[0] // rows)
    report.shards_total += count
    if digests.shape != (count, 32):
        report.problems.append(f"camera {camera!r}: {SHARD_SHA256} has shape {digests.shape}, "
                               f"expected {(count, 32)}")
        return
    zero: list[np.ndarray] = []
    block = max(1, _READ_BYTES // max(rows * shape[1] * 2, 1))
    for first in range(0, count, block):
        for i, part in _shards(arr, first, min(first + block, count), rows):
            where = f"camera {camera!r} shard {i}"
            if isinstance(part, Exception):
                report.problems.append(f"{where}: cannot be decoded ({type(part).__name__}: "
                                       f"{part})")
                continue
            zero.append(np.flatnonzero(~part.any(axis=1)) + i * rows)
            if not digests[i].any():
                report.problems.append(f"{where}: no checksum record (never finished, or its "
                                       "marker was lost)")
            elif not _matches(part, digests[i]):
                report.problems.append(f"{where} (rows {i * rows}..{i * rows + len(part) - 1}): "
                                       "rows do not match the checksum recorded when it was "
                                       "written")
            else:
                report.shards_verified += 1
    zero_rows = np.concatenate(zero) if zero else np.empty(0, np.int64)
    if len(zero_rows):
        report.zero_rows[camera] = len(zero_rows)
        if ends is not None:
            episodes = np.unique(np.searchsorted(ends, zero_rows, side="right"))
            report.zero_row_episodes[camera] = [int(e) for e in episodes]


def listing_problems(root_url: str, key: str, storage_options: Options = None) -> list[str]:
    """What is wrong with a group short of reading its data: attrs that no longer match their
    checksum, and shard and record objects that are not in the store (one listing).

    What `status` can afford on every call. A shard whose rows are all zero may legitimately
    have no object (zarr writes no empty chunks): it is missing only if its record says so.
    """
    group = open_group(root_url, key, storage_options, write=False)
    if group is None:
        return [f"group {key[:12]} is missing"]
    fs, root = fs_path(root_url, storage_options)
    base = f"{root}/{key}"
    fs.invalidate_cache(base)
    present = {p[len(base) + 1:] for p in fs.find(base)}
    attrs = dict(group.attrs)
    changed = attrs_problem(attrs)
    missing: list[str] = [changed] if changed else []
    if not isinstance(attrs.get("cameras"), list):
        return missing
    for name in [a.name for a in feature_arrays(attrs)]:  # per camera, or camera and layer
        try:
            arr = open_array(root_url, f"{key}/{name}", storage_options, write=False)
            record = open_array(root_url, f"{key}/{SHARD_SHA256}/{name}", storage_options,
                                write=False)
        except StoreError:
            missing.append(f"camera {name!r}: array or checksum records missing")
            continue
        rows = rows_per_shard(arr)
        for i in range(-(-arr.shape[0] // rows)):
            if f"{name}/{arr.metadata.encode_chunk_key((i, 0))}" not in present:
                n = min(rows, arr.shape[0] - i * rows)
                zero = rows_sha256(np.zeros((n, arr.shape[1]), np.float16))
                if np.asarray(record[i], np.uint8).tobytes() != zero:
                    missing.append(f"camera {name!r} shard {i}: its file is missing")
            if f"{SHARD_SHA256}/{name}/{record.metadata.encode_chunk_key((i, 0))}" not in present:
                missing.append(f"camera {name!r} shard {i}: its checksum record is missing")
    return missing
