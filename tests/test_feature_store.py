"""The Zarr feature store: layout, distributed shard writing, refusals, and kill-and-resume."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client
from zarr.codecs import ZstdCodec

from pipeline.distributed import get_client
from pipeline.errors import StoreError
from pipeline.store import features as fs
from pipeline.store import writer
from pipeline.store.inspect import summary
from pipeline.store.shards import write_shards_distributed
from tests.helpers import kill_group

KEY = "f" * 64
CAMERAS = ("vil_camera", "fixed")
D, ROWS = 16, 2500
ENDS = np.array([900, 1700, 2500])  # 3 episodes


def make_spec(key: str = KEY, feature_dim: int = D,
              cameras: tuple[str, ...] = CAMERAS) -> fs.FeatureStoreSpec:
    attrs = {"encoder": "resnet34", "weights": {"kind": "random", "sha256": "0" * 64},
             "preprocessing": {"size": 224}, "precision": "fp32", "episodes_key": "e" * 64}
    return fs.FeatureStoreSpec(key, cameras, feature_dim, ROWS, ENDS, attrs,
                               rows_per_chunk=256, chunks_per_shard=2)


# Module-level so dask can pickle them by reference to the worker processes.
def features_for(camera_index: int, start: int, stop: int) -> np.ndarray:
    rows = np.arange(start, stop, dtype=np.float32)[:, None]
    return np.sin(rows * 0.01 + np.arange(D, dtype=np.float32) + camera_index).astype(np.float32)


def logged_features(log_dir: str, camera_index: int, start: int, stop: int) -> np.ndarray:
    Path(log_dir, f"{camera_index}-{start}-{uuid.uuid4().hex}").touch()
    return features_for(camera_index, start, stop)


def failing_features(fail_from: int, camera_index: int, start: int, stop: int) -> np.ndarray:
    if start >= fail_from:
        raise RuntimeError(f"encoder blew up at row {start}")
    return features_for(camera_index, start, stop)


def slow_features(delay: float, camera_index: int, start: int, stop: int) -> np.ndarray:
    time.sleep(delay)
    return features_for(camera_index, start, stop)


def expected(camera: str) -> np.ndarray:
    return features_for(CAMERAS.index(camera), 0, ROWS).astype(np.float16)


def write_all(client: Client, root: str, spec: fs.FeatureStoreSpec,
              compute: Callable[..., np.ndarray]) -> int:
    return sum(
        write_shards_distributed(client, root, spec, cam, functools.partial(compute, i),
                                    progress=False)
        for i, cam in enumerate(spec.cameras))


def array_files(root: Path, key: str, name: str) -> dict[str, bytes]:
    base = root / key / name
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file()}


def assert_same_store(a: Path, b: Path, key: str = KEY) -> None:
    for name in (*CAMERAS, "episode_ends"):
        files_a, files_b = array_files(a, key, name), array_files(b, key, name)
        assert files_a.keys() == files_b.keys(), name
        assert files_a == files_b, f"{name} differs byte-wise"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    c = get_client(workers=2)
    yield c
    c.close()


@pytest.fixture(scope="module")
def reference(client: Client, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run to compare resumed stores against."""
    root = tmp_path_factory.mktemp("reference")
    assert write_all(client, str(root), make_spec(), features_for) == 10
    writer.finalize(str(root), KEY)
    return root


def test_distributed_write_reads_back_with_plain_zarr_and_dask(reference: Path) -> None:
    group = zarr.open_group(str(reference), path=KEY, mode="r")
    assert group.attrs["complete"] is True and group.attrs["key"] == KEY
    assert group.attrs["cameras"] == list(CAMERAS) and group.attrs["num_rows"] == ROWS
    assert sorted(group.array_keys()) == sorted([*CAMERAS, "episode_ends"])
    np.testing.assert_array_equal(zarr.open_array(str(reference), path=f"{KEY}/episode_ends")[:],
                                  ENDS)
    for cam in CAMERAS:
        arr = zarr.open_array(str(reference), path=f"{KEY}/{cam}", mode="r")
        assert arr.dtype == np.float16 and arr.shape == (ROWS, D)
        assert arr.chunks == (256, D) and arr.shards == (512, D)
        codec = arr.compressors[0]
        assert isinstance(codec, ZstdCodec) and codec.level == 3
        np.testing.assert_array_equal(arr[:], expected(cam))
        lazy = da.from_zarr(str(reference), component=f"{KEY}/{cam}")
        np.testing.assert_array_equal(lazy.compute(), expected(cam))

    store = fs.open_features(str(reference), KEY)
    assert store.cameras == CAMERAS and store.num_rows == ROWS and store.feature_dim == D
    np.testing.assert_array_equal(store.read("fixed", 1000, 1200), expected("fixed")[1000:1200])
    np.testing.assert_array_equal(store.dask("vil_camera").compute(), expected("vil_camera"))
    assert store.dask("fixed").chunksize == (512, D)
    assert 0 < store.bytes_per_frame() < 2 * D and store.nbytes_stored() > 0
    info = summary(store)
    assert info["random_weights"] is True and "RANDOM" in info["warning"]
    assert info["cameras"]["fixed"]["shape"] == [ROWS, D] and info["episodes"] == 3
    assert fs.is_complete(str(reference), KEY)


def test_incomplete_store_is_refused(tmp_path: Path) -> None:
    root, spec = str(tmp_path), make_spec(cameras=("fixed",))
    writer.prepare_group(root, spec)
    for i in (0, 2):
        writer.write_shard(root, KEY, "fixed", i, features_for(1, *spec.shard_range(i)))
    assert writer.shards_todo(root, KEY, "fixed") == [1, 3, 4]
    assert not fs.is_complete(root, KEY)
    with pytest.raises(StoreError, match="never reads as done"):
        fs.open_features(root, KEY)
    with pytest.raises(StoreError, match=r"misses shards \[1, 3, 4\]"):
        writer.finalize(root, KEY)
    with pytest.raises(StoreError, match="no feature group"):
        fs.open_features(root, "0" * 64)


def test_failed_run_resumes_only_missing_shards(client: Client, reference: Path,
                                                tmp_path: Path) -> None:
    root, spec = str(tmp_path / "store"), make_spec()
    with pytest.raises(RuntimeError, match="encoder blew up") as info:
        write_all(client, root, spec, functools.partial(failing_features, 1024))
    assert any("rerun resumes" in note for note in info.value.__notes__)
    todo = {cam: writer.shards_todo(root, KEY, cam) for cam in CAMERAS}
    assert todo["vil_camera"] == [2, 3, 4]  # the first camera failed; the second never started
    assert todo["fixed"] == [0, 1, 2, 3, 4]

    log = tmp_path / "calls"
    log.mkdir()
    assert write_all(client, root, spec, functools.partial(logged_features, str(log))) == 8
    calls = sorted(p.name.rsplit("-", 1)[0] for p in log.iterdir())
    step = spec.rows_per_chunk  # rows are computed one chunk per task, shards written whole
    assert calls == sorted([f"0-{s}" for s in range(spec.shard_range(2)[0], ROWS, step)]
                           + [f"1-{s}" for s in range(0, ROWS, step)])
    assert write_all(client, root, spec, functools.partial(logged_features, str(log))) == 0
    writer.finalize(root, KEY)
    assert_same_store(Path(root), reference)


_KILLED_WRITER = """
import functools, sys
sys.path.insert(0, {tests!r})
from test_feature_store import CAMERAS, make_spec, slow_features
from pipeline.distributed import get_client
from pipeline.store.shards import write_shards_distributed

if __name__ == "__main__":
    client = get_client(workers=2)
    for i, cam in enumerate(CAMERAS):
        write_shards_distributed(client, {root!r}, make_spec(), cam,
                                 functools.partial(slow_features, 1.0, i), progress=False)
"""


def test_kill_minus_9_midway_then_resume_gives_identical_store(
        client: Client, reference: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    script = textwrap.dedent(_KILLED_WRITER).format(tests=str(Path(__file__).parent), root=root)
    # Its own session, so the kill takes the dask workers too, as a crashed machine would.
    log = tmp_path / "writer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    done_dir = Path(root, KEY, fs.SHARD_SHA256, CAMERAS[0], "c")
    try:
        deadline = time.monotonic() + 60
        while not (done_dir.is_dir() and any(done_dir.iterdir())):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "writer never finished a shard"
            time.sleep(0.02)
    finally:
        kill_group(proc, "writer")  # no orphaned worker may keep writing while we resume

    left = {cam: writer.shards_todo(root, KEY, cam) for cam in CAMERAS}
    assert 0 < len(left[CAMERAS[0]]) < 5 and len(left[CAMERAS[1]]) == 5
    assert not fs.is_complete(root, KEY)
    assert write_all(client, root, make_spec(), features_for) == sum(map(len, left.values()))
    writer.finalize(root, KEY)
    assert not list(Path(root).rglob("*.partial"))
    assert_same_store(Path(root), reference)
    np.testing.assert_array_equal(fs.open_features(root, KEY).read("fixed"), expected("fixed"))


def test_garbage_left_in_an_unfinished_shard_is_overwritten(reference: Path,
                                                            tmp_path: Path) -> None:
    root, spec = str(tmp_path), make_spec()
    writer.prepare_group(root, spec)
    for cam in CAMERAS:  # a torn write on a non-atomic backend, never marked done
        shard = tmp_path / KEY / cam / "c" / "1" / "0"
        shard.parent.mkdir(parents=True)
        shard.write_bytes(b"\x00torn" * 100)
    for i, cam in enumerate(CAMERAS):
        for s in writer.shards_todo(root, KEY, cam):
            writer.write_shard(root, KEY, cam, s, features_for(i, *spec.shard_range(s)))
    writer.finalize(root, KEY)
    assert_same_store(tmp_path, reference)


def test_group_under_a_foreign_key_is_refused(reference: Path, tmp_path: Path) -> None:
    other = "a" * 64
    shutil.copytree(reference / KEY, tmp_path / other)
    shutil.copy(reference / "zarr.json", tmp_path / "zarr.json")
    with pytest.raises(StoreError, match="do not match its key"):
        fs.open_features(str(tmp_path), other)
    assert not fs.is_complete(str(tmp_path), other)
    with pytest.raises(StoreError, match="do not match its key"):
        writer.prepare_group(str(tmp_path), make_spec(key=other))


def test_prepare_group_is_idempotent_and_refuses_mismatches(tmp_path: Path) -> None:
    root, spec = str(tmp_path), make_spec()
    writer.prepare_group(root, spec)
    writer.write_shard(root, KEY, "fixed", 0, features_for(1, *spec.shard_range(0)))
    writer.prepare_group(root, spec)  # a resume must keep finished shards
    assert writer.shards_todo(root, KEY, "fixed") == [1, 2, 3, 4]
    with pytest.raises(StoreError, match="feature_dim=16 but this run expects 32"):
        writer.prepare_group(root, make_spec(feature_dim=32))
    with pytest.raises(StoreError, match="cameras"):
        writer.prepare_group(root, make_spec(cameras=("fixed",)))
    bad_ends = make_spec()
    bad_ends.episode_ends = np.array([100, 200])
    with pytest.raises(StoreError, match="episode_ends"):
        writer.prepare_group(root, bad_ends)


def test_write_shard_checks_its_input(tmp_path: Path) -> None:
    root, spec = str(tmp_path), make_spec()
    writer.prepare_group(root, spec)
    with pytest.raises(StoreError, match="expected \\(452, 16\\)"):
        writer.write_shard(root, KEY, "fixed", 4, np.zeros((512, D), np.float32))
    with pytest.raises(StoreError, match="NaN or inf"):
        writer.write_shard(root, KEY, "fixed", 0, np.full((512, D), 1e6, np.float32))
    with pytest.raises(StoreError, match="shard index outside"):
        writer.write_shard(root, KEY, "fixed", 5, np.zeros((0, D), np.float32))
    assert writer.shards_todo(root, KEY, "fixed") == [0, 1, 2, 3, 4]
    assert spec.num_shards == 5 and spec.shard_range(4) == (2048, 2500)


def test_bytes_per_frame_of_512d_random_normal_features(tmp_path: Path) -> None:
    rows = 8192
    spec = fs.FeatureStoreSpec("b" * 64, ("fixed",), 512, rows, np.array([rows]), {})
    writer.prepare_group(str(tmp_path), spec)
    data = np.random.default_rng(0).standard_normal((rows, 512)).astype(np.float16)
    started = time.perf_counter()
    writer.write_shard(str(tmp_path), spec.key, "fixed", 0, data)
    seconds = time.perf_counter() - started
    writer.finalize(str(tmp_path), spec.key)
    bpf = fs.open_features(str(tmp_path), spec.key).bytes_per_frame()
    print(f"\n512-d normal float16: {bpf:.0f} bytes/frame (raw 1024), "
          f"write {data.nbytes / seconds / 1e6:.0f} MB/s")
    assert 800 < bpf < 1100  # iid noise barely compresses; real features are smoother
