"""Where stores live: a local path or an fsspec URL, and the filesystem and zarr store for it.

Sharing a feature store is copying one group by key (``pipeline.store.copy``) or pointing STORE
at the shared URL; this module only turns URLs into filesystems and zarr stores, so every other
store module can build on it without importing anything back.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
import zarr
from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import Store

Options = dict[str, Any] | None


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


def same_place(a: str, b: str, a_options: Options = None, b_options: Options = None) -> bool:
    """Whether two roots name the same folder or prefix (same protocol and endpoint)."""
    fs_a, path_a = fs_path(a, a_options)
    fs_b, path_b = fs_path(b, b_options)
    return type(fs_a) is type(fs_b) and path_a == path_b and \
        resolve_options(a, a_options).get("endpoint_url") == \
        resolve_options(b, b_options).get("endpoint_url")


def zarr_store(url: str, storage_options: Options = None, read_only: bool = False) -> Store:
    """A zarr store for ``url``: LocalStore for paths, FsspecStore for URLs."""
    if not is_url(url):
        return zarr.storage.LocalStore(local_path(url), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        url, storage_options=resolve_options(url, storage_options), read_only=read_only)


def location(root_url: str, key: str) -> str:
    return f"{root_url.rstrip('/')}/{key}"

