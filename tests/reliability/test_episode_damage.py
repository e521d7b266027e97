"""A changed byte in an episode file is an error naming the file and the field, never other
pixels: every dataset carries HDF5's fletcher32 checksum per chunk (zstd and lzf decode a flipped
byte into other values without complaint). Files written before the checksums still read."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.store.episodes import EpisodeReader
from pipeline.store.frames import LEGACY, FrameCodec, codec_of
from tests.test_episode_codec import EPISODES, expected, write_file


def flip_chunk_byte(path: Path, dataset: str, chunk: int = 0, where: float = 0.5) -> None:
    """Flip one bit inside a stored chunk of ``dataset``, as a disk or a copy might."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + int(info.size * where))
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("codec", [FrameCodec("zstd", 16), LEGACY], ids=["zstd", "lzf"])
@pytest.mark.parametrize("where", [0.2, 0.5, 0.8])
def test_a_flipped_byte_in_the_frames_is_refused_by_name(tmp_path: Path, codec: FrameCodec,
                                                          where: float) -> None:
    path = tmp_path / "episodes.hdf5"
    write_file(path, codec, EPISODES)
    with h5py.File(path, "r") as f:
        assert "fletcher32" in codec_of(f["data/demo_1/obs/top_image"])
    flip_chunk_byte(path, "data/demo_1/obs/top_image", where=where)
    with EpisodeReader(path) as reader:  # opening reads no frame
        np.testing.assert_array_equal(reader.read_rows("side", 0, 90),
                                      expected("side")[:90])  # the other camera is whole
        with pytest.raises(StoreError, match=r"episodes.hdf5: field '/data/demo_1/obs/top_image' "
                                             r"cannot be read back .*damaged.*Fix: .*FORCE=1"):
            reader.read_all("top")
        np.testing.assert_array_equal(reader.read_rows("top", 0, 50), expected("top")[:50])


def test_a_flipped_byte_in_a_low_dim_array_is_refused_on_open(tmp_path: Path) -> None:
    path = tmp_path / "episodes.hdf5"
    write_file(path, FrameCodec(), EPISODES)
    flip_chunk_byte(path, "data/demo_2/actions")
    with pytest.raises(StoreError, match=r"field 'data/demo_2/actions' cannot be read back"):
        EpisodeReader(path)


def test_a_file_written_before_the_checksums_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "episodes.hdf5"
    write_file(path, LEGACY, EPISODES)
    with h5py.File(path, "r+") as f:  # rewrite every dataset as the old writer did: no checksum
        for name in [n for n in _datasets(f)]:
            data, options = f[name][()], {}
            if f[name].compression == "lzf":
                options = {"chunks": f[name].chunks, "compression": "lzf"}
            del f[name]
            f.create_dataset(name, data=data, **options)
    with h5py.File(path, "r") as f:
        assert "fletcher32" not in codec_of(f["data/demo_0/obs/top_image"])
    with EpisodeReader(path) as reader:
        np.testing.assert_array_equal(reader.read_all("top"), expected("top"))


def _datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names
