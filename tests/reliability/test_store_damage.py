"""A damaged feature group is never used (issue 18, item 1), on a local folder and on S3 (moto).

Store damage tried systematically: a shard file or a checksum record deleted, truncated, or with
one byte flipped. Every read of a group (what bc, dapg and probe do), the thorough check a cache
hit makes, the listing `status` makes, `rrl verify` and `push` each see it and say which shard
and how to fix it; nothing is returned from a damaged shard.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.store import features as fs
from pipeline.store.copy import copy_group
from pipeline.store.remote import fs_path
from pipeline.store.verify import listing_problems, verify_group
from tests.reliability.test_store_verify import CAMERAS, KEY, ROWS, build, features_for

SHARD = f"{KEY}/top/c/2/0"  # rows 256..383 of camera 'top'
RECORD = f"{KEY}/_shard_sha256/top/c/2/0"


def delete(fsys: Any, path: str) -> None:
    fsys.rm_file(path)


def truncate(fsys: Any, path: str) -> None:
    data = fsys.cat_file(path)
    fsys.pipe_file(path, data[: len(data) // 2])


def flip(fsys: Any, path: str) -> None:
    data = bytearray(fsys.cat_file(path))
    data[len(data) // 3] ^= 0x40  # inside the compressed rows (the shard index is at the end)
    fsys.pipe_file(path, bytes(data))


DAMAGE: dict[str, Callable[[Any, str], None]] = {"deleted": delete, "truncated": truncate,
                                                  "flipped": flip}


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    """(root URL, storage options) of a finished 6-shard-per-camera group."""
    if request.param == "local":
        url, options = str(tmp_path / "store"), None
    else:
        options = request.getfixturevalue("s3")
        url = f"s3://rrl-test/damage-{request.node.name.replace('[', '-').strip(']')}"
    import pipeline.store.features as features_mod
    import pipeline.store.writer as writer_mod

    spec = features_mod.FeatureStoreSpec(KEY, CAMERAS, 8, ROWS, np.array([250, 500, 700]),
                                         {"encoder": "tiny"},
                                         {"actions": np.arange(ROWS * 2.0).reshape(ROWS, 2)},
                                         rows_per_chunk=64, chunks_per_shard=2)
    if options is None:
        build(Path(url))
    else:
        writer_mod.prepare_group(url, spec, options)
        for i, cam in enumerate(CAMERAS):
            for s in range(spec.num_shards):
                writer_mod.write_shard(url, KEY, cam, s, features_for(i, *spec.shard_range(s)),
                                       options)
        writer_mod.finalize(url, KEY, options)
    return url, options


def damage(url: str, options: Any, what: str, how: str) -> None:
    fsys, root = fs_path(url, options)
    DAMAGE[how](fsys, f"{root}/{SHARD if what == 'shard' else RECORD}")
    fsys.invalidate_cache(root)


@pytest.mark.parametrize("how", list(DAMAGE))
@pytest.mark.parametrize("what", ["shard", "record"])
def test_every_read_of_a_damaged_shard_fails_naming_it_and_the_fix(store: tuple[str, Any],
                                                                   what: str, how: str) -> None:
    url, options = store
    damage(url, options, what, how)
    group = fs.open_features(url, KEY, options)  # opening reads no shard
    with pytest.raises(StoreError, match=r"top: .*shard 2 \(rows 256\.\.383\).*damaged.*"
                                         r"Fix: re-encode it: run the encode stage with FORCE=1"):
        group.read("top")
    with pytest.raises(StoreError, match=r"shard 2"):
        group.read("top", 300, 310)  # a slice inside the damaged shard
    # The intact shards and camera still read, and equal what was written.
    np.testing.assert_array_equal(group.read("top", 0, 256),
                                  features_for(1, 0, 256).astype(np.float16))
    np.testing.assert_array_equal(group.read("fixed"), features_for(0, 0, ROWS).astype(np.float16))
    report = verify_group(url, KEY, options)  # a truncated record no longer crashes it
    assert not report.ok and report.shards_verified == 11
    assert any("camera 'top' shard 2" in p for p in report.problems)


@pytest.mark.parametrize("what", ["shard", "record"])
def test_status_sees_a_lost_file_with_one_listing(store: tuple[str, Any], what: str) -> None:
    url, options = store
    assert listing_problems(url, KEY, options) == []
    damage(url, options, what, "deleted")
    expected = "its file is missing" if what == "shard" else "its checksum record is missing"
    assert listing_problems(url, KEY, options) == [f"camera 'top' shard 2: {expected}"]


def test_a_damaged_group_is_not_pushed(store: tuple[str, Any], tmp_path: Path) -> None:
    url, options = store
    damage(url, options, "shard", "flipped")
    with pytest.raises(StoreError, match=r"source group does not match its own checksums.*shard 2"):
        copy_group(url, str(tmp_path / "shared"), KEY, src_options=options, progress=False)
    assert not fs.is_complete(str(tmp_path / "shared"), KEY)


def test_damaged_small_arrays_are_refused_on_read(tmp_path: Path) -> None:
    build(tmp_path)
    fsys, root = fs_path(str(tmp_path), None)
    flip(fsys, f"{root}/{KEY}/low_dim/actions/c/0/0")
    group = fs.open_features(str(tmp_path), KEY)
    with pytest.raises(StoreError, match=r"array low_dim/actions (does not match|cannot be decoded)"
                                         r".*Fix: re-encode"):
        group.low_dim("actions")
    fsys.rm_file(f"{root}/{KEY}/episode_ends/c/0")
    with pytest.raises(StoreError, match=r"array episode_ends does not match"):
        fs.open_features(str(tmp_path), KEY)


def test_an_all_zero_shard_without_an_object_is_not_reported_missing(tmp_path: Path) -> None:
    import pipeline.store.writer as writer_mod

    spec = fs.FeatureStoreSpec(KEY, ("top",), 8, 256, np.array([256]), {}, {},
                               rows_per_chunk=64, chunks_per_shard=2)
    writer_mod.prepare_group(str(tmp_path), spec)
    writer_mod.write_shard(str(tmp_path), KEY, "top", 0, np.zeros((128, 8)))  # zarr writes no object
    writer_mod.write_shard(str(tmp_path), KEY, "top", 1, features_for(0, 128, 256))
    writer_mod.finalize(str(tmp_path), KEY)
    assert not (tmp_path / KEY / "top" / "c" / "0" / "0").exists()
    assert listing_problems(str(tmp_path), KEY) == []
    assert not fs.open_features(str(tmp_path), KEY).read("top", 0, 128).any()


def edit_attrs(url: str, options: Any, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the group's zarr.json with its attributes changed (a byte-level edit that still
    parses: what a flipped digit or a hand edit leaves)."""
    import json

    fsys, root = fs_path(url, options)
    path = f"{root}/{KEY}/zarr.json"
    meta = json.loads(fsys.cat_file(path))
    change(meta["attributes"])
    fsys.pipe_file(path, json.dumps(meta).encode())
    fsys.invalidate_cache(root)


def test_changed_attrs_are_refused_by_every_reader(store: tuple[str, Any], tmp_path: Path) -> None:
    # The attrs say how to rebuild the encoder (evaluate and rollouts read nothing else of a
    # group), and no shard checksum covers them.
    url, options = store
    assert fs.attrs_problem(fs.open_features(url, KEY, options).attrs) is None
    edit_attrs(url, options, lambda attrs: attrs.update(encoder="tinz"))
    with pytest.raises(StoreError, match=r"attrs \(its zarr.json\) no longer match the "
                                         r"attrs_sha256.*Fix: re-encode it"):
        fs.open_features(url, KEY, options)
    report = verify_group(url, KEY, options)
    assert not report.ok and "attrs_sha256" in report.problems[0]
    assert "attrs_sha256" in listing_problems(url, KEY, options)[0]  # what status shows
    with pytest.raises(StoreError, match=r"attrs_sha256"):
        copy_group(url, str(tmp_path / "shared"), KEY, src_options=options, progress=False)
    assert not fs.is_complete(str(tmp_path / "shared"), KEY)


def test_a_group_finished_before_attrs_checksums_still_reads(tmp_path: Path) -> None:
    build(tmp_path)
    edit_attrs(str(tmp_path), None, lambda attrs: attrs.pop(fs.ATTRS_SHA256))
    group = fs.open_features(str(tmp_path), KEY)
    assert verify_group(str(tmp_path), KEY).ok
    np.testing.assert_array_equal(group.read("fixed"), features_for(0, 0, ROWS).astype(np.float16))
