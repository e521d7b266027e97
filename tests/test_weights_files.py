"""Weights files kept by content beside the feature groups (pipeline/store/weights_files.py):
local and S3 stores (a real moto_server), the local cache, damaged copies, and copies that leave
large files behind with a clear error naming the file and its sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import WeightsError
from pipeline.store import weights_files as wf

URL = "s3://rrl-test/weights-files"


def weights_file(folder: Path, name: str = "encoder.safetensors", size: int = 4096) -> wf.WeightsFile:
    data = hashlib.sha256(name.encode()).digest() * (size // 32)
    (folder / name).write_bytes(data)
    return wf.WeightsFile(hashlib.sha256(data).hexdigest(), name, len(data))


def test_local_store_keeps_and_finds_a_file_by_content(tmp_path: Path) -> None:
    ref = weights_file(tmp_path)
    store = str(tmp_path / "features.zarr")
    where = wf.put_weights(store, tmp_path / ref.name, ref.sha256)
    assert where == f"{store}/_weights/{ref.sha256}/{ref.name}"
    (tmp_path / ref.name).unlink()  # the original is gone: the store's copy rebuilds the encoder
    found = wf.fetch_weights(store, ref)
    assert found == Path(where) and hashlib.sha256(found.read_bytes()).hexdigest() == ref.sha256
    assert wf.resolve_reference(f"sha256:{ref.sha256}", store) == where
    assert wf.resolve_reference("random", store) == "random"
    data = bytearray(found.read_bytes())
    data[100] ^= 1
    found.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=rf"{ref.name}.*{ref.sha256}.*damaged.*Fix:"):
        wf.fetch_weights(store, ref)


def test_a_group_written_before_the_cache_still_finds_its_recorded_path(tmp_path: Path) -> None:
    ref = weights_file(tmp_path)
    attrs = {"kind": "file", "sha256": ref.sha256, "path": str(tmp_path / ref.name)}
    old = wf.WeightsFile.from_attrs(attrs)
    assert old is not None and old.name == ref.name
    assert wf.fetch_weights(str(tmp_path / "store"), old, legacy_path=attrs["path"]) == \
        tmp_path / ref.name
    assert wf.WeightsFile.from_attrs({"kind": "random"}) is None


def test_s3_store_downloads_once_into_the_local_cache(s3: dict[str, Any], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRL_CACHE", str(tmp_path / "cache"))
    ref = weights_file(tmp_path)
    wf.put_weights(URL, tmp_path / ref.name, ref.sha256, s3)
    got = wf.fetch_weights(URL, ref, s3)
    assert got == tmp_path / "cache" / "weights" / ref.sha256 / ref.name
    assert got.read_bytes() == (tmp_path / ref.name).read_bytes()
    assert wf.fetch_weights("s3://rrl-test/elsewhere", ref, s3) == got  # the cache answers


def test_copies_carry_weights_and_leave_large_ones_with_a_clear_error(
        s3: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRL_CACHE", str(tmp_path / "cache"))
    src = str(tmp_path / "src")
    small, large = weights_file(tmp_path, "small.pth", 1024), weights_file(tmp_path, "large.pth", 8192)
    for ref in (small, large):
        wf.put_weights(src, tmp_path / ref.name, ref.sha256)
    pushed = wf.carry_weights(src, URL + "/shared", [small, large], dst_options=s3, max_bytes=4000)
    assert [small.name in c for c in pushed.copied] == [True]
    assert len(pushed.left_out) == 1 and large.sha256 in pushed.left_out[0]
    assert "left out weights file 'large.pth'" in pushed.lines()[0]
    fresh = str(tmp_path / "fresh")
    pulled = wf.carry_weights(URL + "/shared", fresh, [small, large], src_options=s3)
    assert len(pulled.copied) == 1 and pulled.unavailable and large.sha256 in pulled.unavailable[0]
    assert wf.fetch_weights(fresh, small).read_bytes() == (tmp_path / small.name).read_bytes()
    with pytest.raises(WeightsError, match=rf"'large\.pth' \(sha256 {large.sha256}.*left out.*Fix:"):
        wf.fetch_weights(fresh, large)


@pytest.mark.parametrize("weights", [
    {"kind": "file", "sha256": "../../victim", "file": "a.safetensors"},
    {"kind": "file", "sha256": "A" * 64, "file": "a.safetensors"},
    {"kind": "file", "sha256": "a" * 64, "file": "../../victim/secret.txt"},
    {"kind": "file", "sha256": "a" * 64, "file": ".."},
], ids=["traversing sha256", "upper-case sha256", "traversing name", "dot-dot name"])
def test_weights_attrs_that_could_leave_the_weights_folder_are_refused(
        weights: dict[str, str]) -> None:
    # Before any path is made from them: fetch_weights would hash (and delete a .tmp) there,
    # and a push would upload what it found.
    with pytest.raises(WeightsError, match=r"not used\. Fix:"):
        wf.WeightsFile.from_attrs(weights)
    ok = wf.WeightsFile.from_attrs({"kind": "file", "sha256": "a" * 64, "file": "vae.safetensors"})
    assert ok is not None and ok.name == "vae.safetensors"
