"""Where stores live (a local path or an fsspec URL) and copying a feature group between them.

Sharing a feature store is copying one group by key (``rrl push KEY URL`` / ``rrl pull KEY URL``)
or pointing STORE at the shared URL. A copy is a plain object-by-object file copy of the group:
no re-encoding, so it runs at the speed of the storage. The group's own ``zarr.json`` holds the
``complete`` marker and the consolidated metadata; it is removed first and written last, so a
copy cut short never reads as complete at the destination.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
import zarr
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm
from zarr.abc.store import Store

from pipeline.errors import bad_store

Options = dict[str, Any] | None
MARKER = "zarr.json"
_BATCH_BYTES = 64 << 20  # bytes held in memory per batch of concurrent object copies


def is_url(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def local_path(url: str) -> str:
    return os.path.abspath(os.path.expanduser(url.removeprefix("file://")))


def resolve_options(url: str, storage_options: Options) -> dict[str, Any]:
    """fsspec options for ``url``; an S3 endpoint may also come from AWS_ENDPOINT_URL(_S3)."""
    opts = dict(storage_options or {})
    given = "endpoint_url" in opts or "endpoint_url" in opts.get("client_kwargs", {})
    if url.startswith(("s3://", "s3a://")) and not given:
        # Recent botocore reads these variables itself; passing it on works with any version.
        env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if env:
            opts["endpoint_url"] = env
    return opts


def fs_path(url: str, storage_options: Options = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the root path inside it."""
    if not is_url(url):
        return LocalFileSystem(), local_path(url)
    fs, path = fsspec.core.url_to_fs(url, **resolve_options(url, storage_options))
    return fs, path.rstrip("/")


def zarr_store(url: str, storage_options: Options = None, read_only: bool = False) -> Store:
    """A zarr store for ``url``: LocalStore for paths, FsspecStore for URLs."""
    if not is_url(url):
        return zarr.storage.LocalStore(local_path(url), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        url, storage_options=resolve_options(url, storage_options), read_only=read_only)


def location(root_url: str, key: str) -> str:
    return f"{root_url.rstrip('/')}/{key}"


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
               dst_options: Options = None, progress: bool = True) -> None:
    """Copy the complete group ``key`` from ``src_url`` to ``dst_url`` (push or pull).

    The source must open as complete with matching attrs (else StoreError). A destination that
    already holds the complete group is left alone; anything else there is overwritten.
    """
    # features builds on this module's helpers; importing it here keeps the dependency one-way.
    from pipeline.store.features import is_complete, open_features, open_root

    open_features(src_url, key, src_options)
    if is_complete(dst_url, key, dst_options):
        return
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
    if dst_fs.exists(f"{dst_dir}/{MARKER}"):
        dst_fs.rm_file(f"{dst_dir}/{MARKER}")
    open_root(dst_url, dst_options)
    local_dst = isinstance(dst_fs, LocalFileSystem)
    with tqdm(total=sum(files.values()) + marker_size, unit="B", unit_scale=True,
              desc=f"copy {key[:12]}", disable=not progress) as bar:

        def copy(names: list[str]) -> None:
            data = src_fs.cat([f"{src_dir}/{name}" for name in names])
            out = {f"{dst_dir}/{name}": data[f"{src_dir}/{name}"] for name in names}
            if local_dst:  # object stores have no folders; a local destination needs them
                for folder in {os.path.dirname(path) for path in out}:
                    dst_fs.makedirs(folder, exist_ok=True)
            dst_fs.pipe(out)
            bar.update(sum(len(v) for v in out.values()))

        for batch in _batches(files):
            copy(batch)
        _check_arrived(dst_fs, dst_dir, files, location(dst_url, key))
        copy([MARKER])
    open_features(dst_url, key, dst_options)


def _check_arrived(fs: fsspec.AbstractFileSystem, dst_dir: str, files: dict[str, int],
                   where: str) -> None:
    fs.invalidate_cache(dst_dir)
    found = {p[len(dst_dir) + 1:]: int(i["size"]) for p, i in
             fs.find(dst_dir, detail=True).items()}
    wrong = [name for name, n in files.items() if found.get(name) != n]
    if wrong:
        raise bad_store(where, f"{len(wrong)} objects did not arrive intact (e.g. {wrong[0]})",
                        "run the copy again")
