"""verify_group: every shard against the checksum recorded when it was written, the small arrays
against theirs, zero rows located by episode; unverifiable (pre-checksum) groups are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.errors import StoreError
from pipeline.store import features as fs
from pipeline.store import writer
from pipeline.store.copy import copy_group
from pipeline.store.inspect import format_verify_report
from pipeline.store.verify import verify_group

KEY = "7" * 64
CAMERAS = ("fixed", "top")
D, ROWS = 8, 700
ENDS = np.array([250, 500, 700])  # 3 episodes; shards of 128 rows: 6 per camera


def features_for(camera_index: int, start: int, stop: int) -> np.ndarray:
    rows = np.arange(start, stop, dtype=np.float32)[:, None]
    return np.sin(rows * 0.03 + np.arange(D, dtype=np.float32) * (camera_index + 1)) + 2


def make_spec() -> fs.FeatureStoreSpec:
    low_dim = {"actions": np.arange(ROWS * 2, dtype=np.float64).reshape(ROWS, 2)}
    return fs.FeatureStoreSpec(KEY, CAMERAS, D, ROWS, ENDS, {"encoder": "tiny"}, low_dim,
                               rows_per_chunk=64, chunks_per_shard=2)


def build(root: Path, finalize: bool = True) -> fs.FeatureStoreSpec:
    spec = make_spec()
    writer.prepare_group(str(root), spec)
    for i, cam in enumerate(CAMERAS):
        for s in range(spec.num_shards):
            writer.write_shard(str(root), KEY, cam, s, features_for(i, *spec.shard_range(s)))
    if finalize:
        writer.finalize(str(root), KEY)
    return spec


def test_a_written_group_verifies_shard_by_shard(tmp_path: Path) -> None:
    build(tmp_path)
    report = verify_group(str(tmp_path), KEY)
    assert report.ok and report.problems == []
    assert report.shards_total == report.shards_verified == 12 and report.rows == ROWS
    assert report.zero_rows == {}
    digests = zarr.open_array(str(tmp_path), path=f"{KEY}/_shard_sha256/top", mode="r")[:]
    assert digests.shape == (6, 32) and digests.any(axis=1).all()
    assert bytes(digests[1]) == fs.rows_sha256(features_for(1, 128, 256).astype(np.float16))
    assert "OK, 12 of 12 shards" in format_verify_report(report.as_dict())


def test_damaged_missing_and_zeroed_shards_are_each_reported(tmp_path: Path) -> None:
    build(tmp_path)
    fixed = zarr.open_array(str(tmp_path), path=f"{KEY}/fixed", mode="r+")
    fixed[300:310] = 0  # zero rows inside shard 2, episode 1
    (tmp_path / KEY / "top" / "c" / "4" / "0").unlink()  # a lost object reads as zeros
    (tmp_path / KEY / "_shard_sha256" / "top" / "c" / "5" / "0").unlink()  # a lost record
    report = verify_group(str(tmp_path), KEY)
    assert not report.ok and report.shards_verified == 9
    text = " ".join(report.problems)
    assert "camera 'fixed' shard 2 (rows 256..383): rows do not match" in text
    assert "camera 'top' shard 4 (rows 512..639): rows do not match" in text
    assert "camera 'top' shard 5: no checksum record" in text
    assert report.zero_rows == {"fixed": 10, "top": 128}
    assert report.zero_row_episodes == {"fixed": [1], "top": [2]}
    with pytest.raises(StoreError, match=r"verification failed: .*Fix: rebuild"):
        report.raise_if_bad("rebuild")
    assert "zero rows  top: 128 all-zero feature rows, episodes [2]" in \
        format_verify_report(report.as_dict())


def test_tampered_small_arrays_and_attrs_are_reported(tmp_path: Path) -> None:
    build(tmp_path)
    actions = zarr.open_array(str(tmp_path), path=f"{KEY}/low_dim/actions", mode="r+")
    actions[3] = [-1, -1]
    group = zarr.open_group(str(tmp_path), path=KEY, mode="r+", use_consolidated=False)
    group.attrs["key"] = "0" * 64
    report = verify_group(str(tmp_path), KEY)
    assert report.problems[0].startswith("group attrs say key '000")
    assert "low_dim/actions does not match its recorded checksum" in report.problems
    assert report.shards_verified == 12  # the features themselves are intact


def test_finalize_refuses_a_group_damaged_after_its_records(tmp_path: Path) -> None:
    spec = build(tmp_path, finalize=False)
    zarr.open_array(str(tmp_path), path=f"{KEY}/top", mode="r+")[0:5] = 7.0
    with pytest.raises(StoreError, match=r"shard 0 .*rows do not match.*Fix: re-run the encode"):
        writer.finalize(str(tmp_path), KEY)
    assert not fs.is_complete(str(tmp_path), KEY)
    # The resume finds the damaged shard although its record is there, and rewrites it.
    assert writer.shards_todo(str(tmp_path), KEY, "top") == []
    assert writer.shards_todo(str(tmp_path), KEY, "top", verify=True) == [0]
    writer.write_shard(str(tmp_path), KEY, "top", 0, features_for(1, *spec.shard_range(0)))
    assert writer.finalize(str(tmp_path), KEY).ok
    np.testing.assert_array_equal(fs.open_features(str(tmp_path), KEY).read("top"),
                                  features_for(1, 0, ROWS).astype(np.float16))


def test_a_group_written_before_checksums_is_refused(tmp_path: Path) -> None:
    build(tmp_path / "new")
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new", old)
    shutil.rmtree(old / KEY / "_shard_sha256")  # as the layout before checksums existed
    meta = json.loads((old / KEY / "zarr.json").read_text())
    meta["consolidated_metadata"]["metadata"] = {
        k: v for k, v in meta["consolidated_metadata"]["metadata"].items()
        if not k.startswith("_shard_sha256")}
    (old / KEY / "zarr.json").write_text(json.dumps(meta))
    assert fs.is_complete(str(old), KEY)  # it says complete, but cannot prove it
    for attempt in (lambda: verify_group(str(old), KEY), lambda: fs.open_features(str(old), KEY),
                    lambda: copy_group(str(old), str(tmp_path / "copy"), KEY, progress=False)):
        with pytest.raises(StoreError, match=r"written before checksums existed.*FORCE=1"):
            attempt()
    assert not fs.is_complete(str(tmp_path / "copy"), KEY)
