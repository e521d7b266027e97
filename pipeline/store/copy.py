"""Copying a feature group between stores (``rrl push`` / ``rrl pull``), verified at the end.

A copy is a plain object-by-object copy of the group: no re-encoding, so it runs at the speed of
the storage. The order is what keeps a copy cut short from ever reading as done: whatever was at
the destination goes first, then the data, then the per-shard checksum records (the done
markers), then a check of every shard there against its record, and last the group's own
``zarr.json``, which holds ``complete`` and the consolidated metadata. The weights files the
group was encoded with (``weights_files``) travel before that marker too, unless left out by size.
"""

from __future__ import annotations

import contextlib
import os

import fsspec
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from pipeline.errors import StoreError, bad_store
from pipeline.fileio import write_bytes_atomic
from pipeline.store.features import FORCE_FIX, SHARD_SHA256, is_complete, open_features, open_root
from pipeline.store.remote import Options, fs_path, location, same_place
from pipeline.store.verify import VerifyReport, verify_contents, verify_group
from pipeline.store.weights_files import WeightsFile, carry_weights
from pipeline.store.writer import delete_group

MARKER = "zarr.json"
_BATCH_BYTES = 64 << 20  # bytes held in memory per batch of concurrent object copies


def _batches(files: dict[str, int]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for path, n in files.items():
        if out[-1] and size + n > _BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(path)
        size += n
    return [b for b in out if b]


def copy_group(src_url: str, dst_url: str, key: str, src_options: Options = None,
               dst_options: Options = None, progress: bool = True,
               max_weights_bytes: int | None = None) -> VerifyReport:
    """Copy the complete group ``key`` from ``src_url`` to ``dst_url`` (push or pull).

    The source must open as complete with matching attrs (else StoreError). A destination that
    already holds the complete group and passes verification is left alone; anything else there
    is deleted first. The group's weights files come along unless larger than
    ``max_weights_bytes``. Returns the verification of the destination; its ``notes`` name
    weights files left behind.
    """
    source = open_features(src_url, key, src_options)
    refs = [r for r in [WeightsFile.from_attrs(source.attrs.get("weights") or {})] if r]
    if same_place(src_url, dst_url, src_options, dst_options):
        return verify_group(src_url, key, src_options).raise_if_bad(FORCE_FIX)
    if is_complete(dst_url, key, dst_options):
        with contextlib.suppress(StoreError):  # an unverifiable group there is replaced
            report = verify_group(dst_url, key, dst_options)
            if report.ok:
                report.notes = carry_weights(src_url, dst_url, refs, src_options, dst_options,
                                             max_weights_bytes).lines()
                return report
    delete_group(dst_url, key, dst_options)
    src_fs, src_root = fs_path(src_url, src_options)
    dst_fs, dst_root = fs_path(dst_url, dst_options)
    src_dir, dst_dir = f"{src_root}/{key}", f"{dst_root}/{key}"
    listing = src_fs.find(src_dir, detail=True)
    # Relative names; temporary files of a killed local writer are not part of the group.
    files = {p[len(src_dir) + 1:]: int(info["size"]) for p, info in listing.items()
             if not p.endswith(".partial")}
    if MARKER not in files:
        raise bad_store(location(src_url, key), "group has no zarr.json", "re-create it")
    marker_size = files.pop(MARKER)
    records = {n: s for n, s in files.items() if n.startswith(f"{SHARD_SHA256}/")}
    data = {n: s for n, s in files.items() if n not in records}
    open_root(dst_url, dst_options)
    local_dst = isinstance(dst_fs, LocalFileSystem)
    with tqdm(total=sum(files.values()) + marker_size, unit="B", unit_scale=True,
              desc=f"copy {key[:12]}", disable=not progress) as bar:

        def copy(names: list[str]) -> None:
            blobs = src_fs.cat([f"{src_dir}/{name}" for name in names])
            out = {f"{dst_dir}/{name}": blobs[f"{src_dir}/{name}"] for name in names}
            if local_dst:  # object stores have no folders; a local destination needs them
                for folder in {os.path.dirname(path) for path in out}:
                    dst_fs.makedirs(folder, exist_ok=True)
            if names == [MARKER] and local_dst:
                # A local pipe truncates, then writes: cut short, it would leave an empty
                # zarr.json. An object store's put is whole or nothing already.
                write_bytes_atomic(f"{dst_dir}/{MARKER}", out[f"{dst_dir}/{MARKER}"])
            else:
                dst_fs.pipe(out)
            bar.update(sum(len(v) for v in out.values()))

        for part in (data, records):
            for batch in _batches(part):
                copy(batch)
        _check_arrived(dst_fs, dst_dir, files, location(dst_url, key))
        report = verify_contents(dst_url, key, source.attrs, dst_options)
        if not report.ok:
            _blame(src_url, key, src_options, report)
        report.notes = carry_weights(src_url, dst_url, refs, src_options, dst_options,
                                     max_weights_bytes).lines()
        copy([MARKER])
    open_features(dst_url, key, dst_options)
    return report


def _blame(src_url: str, key: str, src_options: Options, report: VerifyReport) -> None:
    """Raise for a destination that failed verification, naming the side at fault."""
    at_source = verify_group(src_url, key, src_options)
    if not at_source.ok:
        raise bad_store(at_source.location, "the source group does not match its own "
                        f"checksums, so it was not copied: {at_source.problem_text()}",
                        f"{FORCE_FIX} where it was made, then copy it again")
    raise bad_store(report.location, "the copy does not match the checksums recorded at encode "
                    f"time, so it is not marked complete: {report.problem_text()}",
                    "run the copy again")


def _check_arrived(fs: fsspec.AbstractFileSystem, dst_dir: str, files: dict[str, int],
                   where: str) -> None:
    fs.invalidate_cache(dst_dir)
    found = {p[len(dst_dir) + 1:]: int(i["size"]) for p, i in
             fs.find(dst_dir, detail=True).items()}
    wrong = [name for name, n in files.items() if found.get(name) != n]
    if wrong:
        raise bad_store(where, f"{len(wrong)} objects did not arrive intact (e.g. {wrong[0]})",
                        "run the copy again")
