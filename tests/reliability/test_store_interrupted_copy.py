"""A copy cut short, or a damaged source or transfer, never leaves a group that reads as complete,
and an encode into what such a copy left behind recomputes every shard (real S3 via moto)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import s3fs
from distributed import Client

from pipeline.distributed import get_client
from pipeline.errors import StoreError
from pipeline.store import features as fs
from pipeline.store import writer
from pipeline.store.copy import copy_group
from pipeline.store.remote import fs_path
from pipeline.store.shards import write_shards_distributed
from pipeline.store.verify import verify_group

CAMERAS = ("fixed", "vil_camera")
D, ROWS = 8, 1300


def features_for(camera_index: int, start: int, stop: int) -> np.ndarray:
    rows = np.arange(start, stop, dtype=np.float32)[:, None]
    return np.cos(rows * 0.02 + np.arange(D, dtype=np.float32) * (camera_index + 1))


def expected(camera: str) -> np.ndarray:
    return features_for(CAMERAS.index(camera), 0, ROWS).astype(np.float16)


def make_spec(key: str) -> fs.FeatureStoreSpec:
    return fs.FeatureStoreSpec(key, CAMERAS, D, ROWS, np.array([500, 1300]), {"encoder": "x"},
                               rows_per_chunk=128, chunks_per_shard=2)


def build_local(root: Path, key: str) -> None:
    spec = make_spec(key)
    writer.prepare_group(str(root), spec)
    for i, cam in enumerate(CAMERAS):
        for s in range(spec.num_shards):
            writer.write_shard(str(root), key, cam, s, features_for(i, *spec.shard_range(s)))
    writer.finalize(str(root), key)


def fail_writes(monkeypatch: pytest.MonkeyPatch, url: str, options: dict[str, Any],
                fails: Callable[[str], bool]) -> list[str]:
    """Fault injection: the destination's connection drops at the first object ``fails`` names.

    Objects are written one at a time in the order the copy sends them; the list returned
    names those that arrived.
    """
    dst, _ = fs_path(url, options)
    real = dst.pipe
    arrived: list[str] = []

    def pipe(path: Any, value: Any = None, **kw: Any) -> None:
        for name, data in (path if isinstance(path, dict) else {path: value}).items():
            if fails(name):
                raise ConnectionError(f"connection lost while writing {name}")
            real(name, data)
            arrived.append(name)

    monkeypatch.setattr(dst, "pipe", pipe)
    return arrived


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    c = get_client(workers=1)
    yield c
    c.close()


def encode_into(client: Client, url: str, key: str, options: dict[str, Any]) -> int:
    spec = make_spec(key)
    written = sum(write_shards_distributed(client, url, spec, cam, functools.partial(features_for, i),
                                           storage_options=options, progress=False)
                  for i, cam in enumerate(CAMERAS))
    writer.finalize(url, key, options)
    return written


def test_push_cut_short_then_encode_there_recomputes_every_lost_shard(
        s3: dict[str, Any], tmp_path: Path, client: Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key, url = "1" * 64, "s3://rrl-test/interrupted-push"
    build_local(tmp_path, key)
    with monkeypatch.context() as m:
        arrived = fail_writes(m, url, s3, lambda name: "/vil_camera/c/" in name)
        with pytest.raises(ConnectionError):
            copy_group(str(tmp_path), url, key, dst_options=s3, progress=False)
    assert any("/fixed/c/" in name for name in arrived)  # it was cut short midway ...
    assert not any("_shard_sha256" in name for name in arrived)  # ... before any marker
    assert not fs.is_complete(url, key, s3)

    # An encode pointed at that prefix (STORE=) must not trust anything the copy left there.
    assert encode_into(client, url, key, s3) == 2 * make_spec(key).num_shards == 12
    report = verify_group(url, key, s3)
    assert report.ok and report.shards_verified == 12 and report.zero_rows == {}
    shared = fs.open_features(url, key, s3)
    for cam in CAMERAS:
        np.testing.assert_array_equal(shared.read(cam), expected(cam))


def test_markers_left_without_their_data_never_count_as_done(
        s3: dict[str, Any], tmp_path: Path, client: Client) -> None:
    # What an older copy (markers sent first) left behind: every record, part of the data, no
    # group metadata. The records must not make the missing shards read as done.
    key, url = "2" * 64, "s3://rrl-test/orphan-markers"
    build_local(tmp_path, key)
    bucket = s3fs.S3FileSystem(**s3)
    for path in sorted((tmp_path / key).rglob("*")):
        name = str(path.relative_to(tmp_path / key))
        if path.is_file() and name != "zarr.json" and "vil_camera/c/" not in name.replace(
                "_shard_sha256/vil_camera", ""):
            bucket.pipe_file(f"rrl-test/orphan-markers/{key}/{name}", path.read_bytes())
    assert bucket.exists(f"rrl-test/orphan-markers/{key}/_shard_sha256/vil_camera/c/0/0")
    assert not bucket.exists(f"rrl-test/orphan-markers/{key}/vil_camera/c/0/0")
    assert encode_into(client, url, key, s3) == 12  # all of it, the leftovers were discarded
    np.testing.assert_array_equal(fs.open_features(url, key, s3).read("vil_camera"),
                                  expected("vil_camera"))


def test_a_retried_copy_completes_and_verifies(s3: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key, url = "3" * 64, "s3://rrl-test/retried"
    build_local(tmp_path, key)
    with monkeypatch.context() as m:
        fail_writes(m, url, s3, lambda name: "_shard_sha256/vil_camera/c/3" in name)
        with pytest.raises(ConnectionError):
            copy_group(str(tmp_path), url, key, dst_options=s3, progress=False)
    assert not fs.is_complete(url, key, s3)  # all data and most markers arrived: not enough
    report = copy_group(str(tmp_path), url, key, dst_options=s3, progress=False)
    assert report.ok and report.shards_verified == 12
    assert fs.is_complete(url, key, s3)


def test_pull_of_a_damaged_source_is_refused_and_says_which_side(
        s3: dict[str, Any], tmp_path: Path) -> None:
    key, url = "4" * 64, "s3://rrl-test/damaged-source"
    build_local(tmp_path / "made", key)
    copy_group(str(tmp_path / "made"), url, key, dst_options=s3, progress=False)
    bucket = s3fs.S3FileSystem(**s3)
    bucket.rm_file(f"rrl-test/damaged-source/{key}/fixed/c/3/0")  # zarr reads it as zeros
    pulled = tmp_path / "pulled"
    with pytest.raises(StoreError, match=r"source group does not match its own checksums.*"
                       r"'fixed' shard 3.*FORCE=1"):
        copy_group(url, str(pulled), key, src_options=s3, progress=False)
    assert not fs.is_complete(str(pulled), key)
    with pytest.raises(StoreError):
        fs.open_features(str(pulled), key)


def test_a_transfer_that_garbles_a_shard_is_caught(s3: dict[str, Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    key, url = "5" * 64, "s3://rrl-test/garbled"
    build_local(tmp_path, key)
    dst, _ = fs_path(url, s3)
    real = dst.pipe

    def flip(blob: bytes) -> bytes:
        middle = len(blob) // 2
        return blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1:]

    def garble(path: dict[str, bytes], value: Any = None, **kw: Any) -> None:
        # One byte of shard 1 changes on the way; its size does not.
        real({k: flip(v) if k.endswith(f"{key}/fixed/c/1/0") else v for k, v in path.items()})

    with monkeypatch.context() as m:
        m.setattr(dst, "pipe", garble)
        with pytest.raises(StoreError, match=r"copy does not match the checksums.*shard 1.*"
                           "Fix: run the copy again"):
            copy_group(str(tmp_path), url, key, dst_options=s3, progress=False)
    assert not fs.is_complete(url, key, s3)
    assert copy_group(str(tmp_path), url, key, dst_options=s3, progress=False).ok
