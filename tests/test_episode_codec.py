"""Episode-file frame codecs: lossless (every pixel reads back as written, whatever the codec,
chunk length or read pattern), smaller than per-frame lzf, outside every content key; files of
the old layout (lzf, one frame per chunk) stay readable and resumable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import StoreError
from pipeline.runner import Runner
from pipeline.store.episodes import Episode, EpisodeReader, EpisodeWriter
from pipeline.store.frames import LEGACY, ChunkCache, FrameCodec, codec_of
from stages import STAGES
from tests.helpers import stand_in_pretrained

LENGTHS = (50, 17, 70)  # episodes shorter and longer than a chunk, ending inside one


def moving_frames(steps: int, seed: int, size: int = 24) -> np.ndarray:
    """A textured background with a square moving over it: consecutive frames mostly agree."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    frames = np.repeat(background[None], steps, axis=0)
    for t in range(steps):
        x = t % (size - 6)
        frames[t, 5:11, x:x + 6] = (255, 40, 10)
    return frames


def episode(steps: int, seed: int) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(frames={"top": moving_frames(steps, seed), "side": moving_frames(steps, seed + 9)},
                   actions=rng.normal(size=(steps, 3)), rewards=rng.normal(size=steps),
                   states=rng.normal(size=(steps, 5)), proprio=rng.normal(size=(steps, 24)),
                   observations=rng.normal(size=(steps, 6)), attrs={"seed": seed})


def write_file(path: Path, codec: FrameCodec, episodes: dict[int, Episode]) -> None:
    writer = EpisodeWriter(path, {"env_name": "door"}, "sha", ("top", "side"), codec=codec)
    for index, ep in episodes.items():
        writer.write(index, ep)
    writer.close()


EPISODES = {i: episode(n, seed=i) for i, n in enumerate(LENGTHS)}


def expected(camera: str) -> np.ndarray:
    return np.concatenate([EPISODES[i].frames[camera] for i in sorted(EPISODES)])


@pytest.mark.parametrize("codec", [LEGACY, FrameCodec("zstd", 16), FrameCodec("zstd", 1),
                                   FrameCodec("lzf", 16), FrameCodec("zstd", 1000)],
                         ids=lambda c: f"{c.name}-{c.chunk_frames}")
def test_every_read_pattern_gives_back_the_written_pixels(tmp_path: Path, codec: FrameCodec) -> None:
    path = tmp_path / "episodes.hdf5"
    write_file(path, codec, EPISODES)
    rng = np.random.default_rng(0)
    with EpisodeReader(path) as reader:
        for cam in ("top", "side"):
            want = expected(cam)
            assert np.array_equal(reader.read_all(cam), want)
            batches = [reader.read_rows(cam, s, min(s + 7, len(want))) for s in range(0, len(want), 7)]
            assert np.array_equal(np.concatenate(batches), want)  # the encode stage's pattern
            for start in rng.integers(0, len(want), 30):
                stop = int(rng.integers(start + 1, len(want) + 1))
                assert np.array_equal(reader.read_rows(cam, int(start), stop), want[start:stop])
            assert np.array_equal(reader.read_rows(cam, len(want) - 1, len(want)), want[-1:])
        assert np.array_equal(reader.read_all("actions"),
                              np.concatenate([e.actions for e in EPISODES.values()]).astype(np.float32))
        first = reader.groups[0]["obs/top_image"]
        rows = min(codec.chunk_frames, LENGTHS[0])
        assert first.chunks == (rows, 24, 24, 3) and codec_of(first).startswith(codec.name)


def test_a_returned_array_is_never_a_view_of_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "episodes.hdf5"
    write_file(path, FrameCodec("zstd", 16), EPISODES)
    with EpisodeReader(path) as reader:
        first = reader.read_rows("top", 3, 5)
        first[:] = 0  # a caller scribbling on its array must not change what others read
        assert np.array_equal(reader.read_rows("top", 3, 5), expected("top")[3:5])


def test_zstd_over_time_chunks_stores_a_fraction_of_per_frame_lzf(tmp_path: Path) -> None:
    sizes = {}
    for codec in (LEGACY, FrameCodec()):
        path = tmp_path / f"{codec.name}.hdf5"
        write_file(path, codec, EPISODES)
        with EpisodeReader(path) as reader:
            sizes[codec.name] = reader.stored_frame_bytes("top")
    assert sizes["zstd"] * 4 < sizes["lzf"], sizes


def test_the_encode_read_pattern_decodes_each_chunk_once(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "frames.hdf5", "w") as f:
        frames = moving_frames(100, 0)
        data = f.create_dataset("frames", data=frames, **FrameCodec("zstd", 16).dataset_options(frames.shape))
        cache = ChunkCache()
        got = [cache.read(data, s, min(s + 7, 100)) for s in range(0, 100, 7)]
        assert np.array_equal(np.concatenate(got), frames)
        assert cache.decoded <= 7  # 7 chunks (16 x 6 + 4); whole chunks are read without caching
        small = ChunkCache(max_bytes=1)  # keeps only the chunk in use
        for s in range(0, 100, 7):
            small.read(data, s, min(s + 7, 100))
        assert small.decoded <= 7  # batches go forward: a chunk is not needed again once left


def test_a_file_written_before_reads_and_resumes_with_the_new_codec(tmp_path: Path) -> None:
    path = tmp_path / "episodes.hdf5"
    write_file(path, LEGACY, {0: EPISODES[0]})  # a file of the old layout, then a resumed run
    writer = EpisodeWriter(path, {"env_name": "door"}, "sha", ("top", "side"), codec=FrameCodec("zstd", 16))
    assert writer.completed() == {0}
    writer.write(1, EPISODES[1])
    writer.write(2, EPISODES[2])
    writer.close()
    with EpisodeReader(path) as reader:
        assert [codec_of(g["obs/top_image"]) for g in reader.groups] == [
            "lzf+fletcher32, 1 frames per chunk", "zstd+fletcher32, 16 frames per chunk",
            "zstd+fletcher32, 16 frames per chunk"]
        assert np.array_equal(reader.read_all("side"), expected("side"))
        assert reader.attrs(2) == {"seed": 2}


def test_frames_stored_with_a_filter_hdf5_lacks_are_refused_with_a_fix(tmp_path: Path) -> None:
    path = tmp_path / "episodes.hdf5"
    write_file(path, LEGACY, {0: EPISODES[0]})
    with h5py.File(path, "a") as f:  # as another tool might write it: a filter nobody registered
        obs = f["data/demo_0/obs"]
        del obs["top_image"]
        data = obs.create_dataset("top_image", shape=(50, 24, 24, 3), dtype=np.uint8,
                                  chunks=(50, 24, 24, 3), compression=32099,
                                  allow_unknown_filter=True)
        data.id.write_direct_chunk((0, 0, 0, 0), EPISODES[0].frames["top"].tobytes())
    with pytest.raises(StoreError, match=r"episodes\.hdf5.*data/demo_0/obs/top_image.*HDF5 "
                                         r"filter 32099.*cannot decode.*Fix: install the filters"):
        EpisodeReader(path)


def test_codec_and_chunk_length_change_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_pretrained(tmp_path, monkeypatch, ("resnet34",))  # RRL's defaults, offline
    demos = {"demos.path": str(tmp_path / "door.pickle"), "demos.sha256": "a" * 64}
    keys = []
    for codec in ({}, {"render.codec": "lzf", "render.chunk_frames": "1"},
                  {"render.chunk_frames": "16"}):
        runner = Runner(PipelineConfig().with_overrides({**demos, **codec}), STAGES, tmp_path)
        keys.append([runner.key(stage) for stage in ("render", "encode", "rollouts")])
    assert keys[0] == keys[1] == keys[2]


READ_WITH_PLAIN_H5PY = """
import sys
{extra}
import h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    frames = f["data/demo_1/obs/top_image"][3:9]
np.save(sys.argv[2], frames)
"""


@pytest.mark.parametrize("plugin", [True, False], ids=["import-hdf5plugin", "h5py-alone"])
def test_a_plain_h5py_reader_needs_only_import_hdf5plugin(tmp_path: Path, plugin: bool) -> None:
    path = tmp_path / "episodes.hdf5"
    write_file(path, FrameCodec(), EPISODES)
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    script = READ_WITH_PLAIN_H5PY.format(extra="import hdf5plugin" if plugin else "")
    proc = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "out.npy")],
                          capture_output=True, text=True, timeout=120, env=env)
    if plugin:
        assert proc.returncode == 0, proc.stderr
        assert np.array_equal(np.load(tmp_path / "out.npy"), EPISODES[1].frames["top"][3:9])
    else:  # the error docs/episode_files.md shows a reader who forgets the import
        assert proc.returncode != 0 and "Can't synchronously read data" in proc.stderr, proc.stderr


@pytest.mark.gl
def test_rendered_door_frames_are_bit_identical_to_the_old_layout(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, sha = tiny_door_demos
    base = {"demos.path": str(path), "demos.sha256": sha, "env.width": "48",
            "env.height": "48", "env.cameras": "top", "render.workers": "1"}
    layouts = {"lzf+fletcher32, 1 frames per chunk": {"render.codec": "lzf",
                                                      "render.chunk_frames": "1"},
               "zstd+fletcher32, 5 frames per chunk": {"render.chunk_frames": "5"}}
    frames, keys = {}, set()
    for layout, settings in layouts.items():
        cfg = PipelineConfig().with_overrides({**base, **settings})
        result = Runner(cfg, STAGES, tmp_path / layout, log=lambda m: None).run("render")
        keys.add(result.key)
        with EpisodeReader(result.out_dir / "episodes.hdf5") as reader:
            assert codec_of(reader.groups[0]["obs/top_image"]) == layout
            frames[layout] = reader.read_all("top")
    first, second = frames.values()
    assert len(keys) == 1 and first.shape == (24, 48, 48, 3) and first.std() > 5
    assert np.array_equal(first, second)


KEEP_WRITING = """
import sys
from pathlib import Path
from pipeline.store.episodes import EpisodeWriter
from pipeline.store.frames import FrameCodec
from tests.test_episode_codec import episode

writer = EpisodeWriter(Path(sys.argv[1]), {"env_name": "door"}, "sha", ("top", "side"),
                       codec=FrameCodec("zstd", 16))
for i in range(int(sys.argv[2])):
    if i not in writer.completed():
        writer.write(i, episode(40 + i % 7, seed=i))
        print(i, flush=True)
writer.close()
"""


@pytest.mark.parametrize("written", [1, 4])
def test_a_writer_killed_mid_episode_resumes_to_the_same_pixels(tmp_path: Path, written: int) -> None:
    path, total = tmp_path / "episodes.hdf5", 12
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-c", KEEP_WRITING, str(path), str(total)]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(written):
        proc.stdout.readline()
    proc.kill()  # SIGKILL while it writes the next episodes: no cleanup, no close
    proc.wait()
    resumed = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with EpisodeReader(path) as reader:
        assert len(reader.names) == total
        for i in range(total):
            want = episode(40 + i % 7, seed=i)
            lo = int(reader.episode_ends[i] - reader.lengths[i])
            for cam in ("top", "side"):
                got = reader.read_rows(cam, lo, int(reader.episode_ends[i]))
                assert np.array_equal(got, want.frames[cam]), (i, cam)


def test_an_encode_worker_reads_a_file_rewritten_at_its_path_afresh(tmp_path: Path) -> None:
    """FORCE=1 render on a long-lived cluster rewrites the file its workers still hold open."""
    from pipeline.encoders.encode_job import _reader

    path = tmp_path / "episodes.hdf5"
    write_file(path, FrameCodec("zstd", 16), {0: episode(10, seed=1)})
    before = _reader(str(path)).read_rows("obs/top_image", 0, 10)
    assert _reader(str(path)) is _reader(str(path))  # one open file per worker while unchanged
    path.unlink()
    write_file(path, FrameCodec("zstd", 16), {0: episode(10, seed=2)})
    after = _reader(str(path)).read_rows("obs/top_image", 0, 10)
    np.testing.assert_array_equal(after, episode(10, seed=2).frames["top"])
    assert not np.array_equal(before, after)
