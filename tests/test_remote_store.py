"""Sharing feature groups through S3: a real moto_server on loopback, not mocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from pipeline.errors import StoreError
from pipeline.store import copy as store_copy
from pipeline.store import features as fs
from pipeline.store import writer
from pipeline.store.copy import copy_group
from pipeline.store.inspect import summary

KEY = "c" * 64
CAMERAS = ("fixed", "vil_camera")
D, ROWS = 8, 1300
URL = "s3://rrl-test/features"


def features_for(camera_index: int, start: int, stop: int) -> np.ndarray:
    rows = np.arange(start, stop, dtype=np.float32)[:, None]
    return np.cos(rows * 0.02 + np.arange(D, dtype=np.float32) * (camera_index + 1))


def build_local(root: Path, key: str = KEY, shards: int | None = None,
                do_finalize: bool = True) -> fs.FeatureStoreSpec:
    spec = fs.FeatureStoreSpec(key, CAMERAS, D, ROWS, np.array([500, 1300]),
                               {"encoder": "resnet18", "weights": {"kind": "imagenet"}},
                               rows_per_chunk=128, chunks_per_shard=2)
    writer.prepare_group(str(root), spec)
    for i, cam in enumerate(CAMERAS):
        for s in range(spec.num_shards if shards is None else shards):
            writer.write_shard(str(root), key, cam, s, features_for(i, *spec.shard_range(s)))
    if do_finalize:
        writer.finalize(str(root), key)
    return spec


def test_push_open_on_s3_and_pull_back(s3: dict[str, Any], tmp_path: Path) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    build_local(src)
    assert not fs.is_complete(URL, KEY, s3)
    copy_group(str(src), URL, KEY, dst_options=s3, progress=False)
    assert fs.is_complete(URL, KEY, s3)

    shared = fs.open_features(URL, KEY, s3)
    local = fs.open_features(str(src), KEY)
    assert shared.attrs == local.attrs and shared.attrs["complete"] is True
    for i, cam in enumerate(CAMERAS):
        np.testing.assert_array_equal(shared.read(cam), features_for(i, 0, ROWS).astype(np.float16))
        np.testing.assert_array_equal(shared.dask(cam).compute(), local.read(cam))
    np.testing.assert_array_equal(shared.episode_ends, [500, 1300])
    assert shared.nbytes_stored() == local.nbytes_stored()
    assert summary(shared)["random_weights"] is False

    copy_group(URL, str(back), KEY, src_options=s3, progress=False)
    pulled = zarr.open_group(str(back), path=KEY, mode="r")
    assert pulled.attrs.asdict() == local.attrs
    for name in (*CAMERAS, "episode_ends"):
        files = {p.relative_to(src / KEY / name): p.read_bytes()
                 for p in (src / KEY / name).rglob("*") if p.is_file()}
        assert files == {p.relative_to(back / KEY / name): p.read_bytes()
                         for p in (back / KEY / name).rglob("*") if p.is_file()}
        np.testing.assert_array_equal(
            zarr.open_array(str(back), path=f"{KEY}/{name}", mode="r")[:],
            zarr.open_array(str(src), path=f"{KEY}/{name}", mode="r")[:])


def test_copy_of_an_incomplete_group_is_refused(s3: dict[str, Any], tmp_path: Path) -> None:
    key = "d" * 64
    build_local(tmp_path, key, shards=2, do_finalize=False)
    with pytest.raises(StoreError, match="incomplete"):
        copy_group(str(tmp_path), URL, key, dst_options=s3, progress=False)
    assert not fs.is_complete(URL, key, s3)
    with pytest.raises(StoreError, match="no feature group"):
        fs.open_features(URL, key, s3)


def test_copy_cut_short_never_reads_complete(s3: dict[str, Any], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    key = "e" * 64
    build_local(tmp_path, key)

    def crash(*args: object) -> None:
        raise KeyboardInterrupt("connection lost")

    with monkeypatch.context() as m:
        m.setattr(store_copy, "_check_arrived", crash)
        with pytest.raises(KeyboardInterrupt):
            copy_group(str(tmp_path), URL, key, dst_options=s3, progress=False)
    assert not fs.is_complete(URL, key, s3)  # the shards arrived, the marker did not
    with pytest.raises(StoreError):
        fs.open_features(URL, key, s3)
    copy_group(str(tmp_path), URL, key, dst_options=s3, progress=False)
    assert fs.is_complete(URL, key, s3)


def test_tampered_key_on_s3_is_refused(s3: dict[str, Any], tmp_path: Path) -> None:
    import s3fs

    key = "f" * 64
    build_local(tmp_path / "src", key)
    copy_group(str(tmp_path / "src"), URL, key, dst_options=s3, progress=False)
    bucket = s3fs.S3FileSystem(**s3)
    marker = f"rrl-test/features/{key}/zarr.json"
    meta = json.loads(bucket.cat_file(marker))
    meta["attributes"]["key"] = "0" * 64
    bucket.pipe_file(marker, json.dumps(meta).encode())
    with pytest.raises(StoreError, match="do not match its key"):
        fs.open_features(URL, key, s3)
    assert not fs.is_complete(URL, key, s3)
    with pytest.raises(StoreError, match="do not match its key"):
        copy_group(URL, str(tmp_path / "pulled"), key, src_options=s3, progress=False)


def test_aws_environment_variables_are_enough(s3: dict[str, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key = "9" * 64
    build_local(tmp_path, key)
    copy_group(str(tmp_path), URL, key, dst_options=s3, progress=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
    store = fs.open_features(URL, key)
    assert store.num_rows == ROWS and store.read("fixed", 0, 3).shape == (3, D)


def test_an_empty_group_marker_left_by_a_cut_short_pull_is_replaced(tmp_path: Path) -> None:
    key = "f" * 64
    build_local(tmp_path / "src", key)
    copy_group(str(tmp_path / "src"), str(tmp_path / "dst"), key, progress=False)
    marker = tmp_path / "dst" / key / "zarr.json"
    marker.write_bytes(b"")  # killed while the marker was being written in place
    assert not fs.is_complete(str(tmp_path / "dst"), key)
    with pytest.raises(StoreError):
        fs.open_features(str(tmp_path / "dst"), key)
    copy_group(str(tmp_path / "src"), str(tmp_path / "dst"), key, progress=False)  # the retry
    assert fs.is_complete(str(tmp_path / "dst"), key)
    np.testing.assert_array_equal(fs.open_features(str(tmp_path / "dst"), key).read("fixed"),
                                  features_for(0, 0, ROWS).astype(np.float16))
