"""How an episode file stores frames: time-chunked and compressed losslessly across frames.

Consecutive frames of an episode differ in a few percent of their pixels (95 % of door demo 0's
pixels are unchanged from one frame to the next), so a codec that sees several frames at once
stores each one in a fraction of what a per-frame codec needs. ``FrameCodec`` says how frames are
chunked (``chunk_frames`` consecutive frames per HDF5 chunk) and which filter compresses a chunk:

- ``zstd`` (the default): Zstandard over the whole chunk through the ``hdf5plugin`` filter, so a
  frame is mostly stored as references to the frame before it;
- ``lzf``: h5py's built-in filter, which sees 8 KB at a time. With ``chunk_frames=1`` this is
  the layout of the files written before (and what a reader without ``hdf5plugin`` can open).

Both are lossless: they change the bytes on disk, never a pixel read back, so neither the codec
nor the chunk length enters a content key. Files of either layout (and a mix, after a resumed
render) read the same through ``EpisodeReader``.

Plain h5py (and robomimic) readers must ``import hdf5plugin`` before reading zstd frames: that
import registers the filter with HDF5 (docs/episode_files.md). This module imports it, so every
reader and writer of ``pipeline.store`` has it.

A reader that asks for a few frames inside a chunk makes HDF5 decode the whole chunk; the
encode stage reads batches that straddle chunks, so ``ChunkCache`` keeps recently decoded chunks
and each chunk is decoded once per pass.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from pipeline.config import FRAME_CODECS, RenderConfig
from pipeline.errors import invalid_value

# Measured on door demos at 256 px (KB per frame, 64-frame chunks): level 1 22.7, 3 14.6, 9 12.1,
# 19 11.0; levels above 9 write 3-30x slower for 1-9 % fewer bytes. Level 9 writes about as
# fast as lzf did (docs/performance.md); decoding speed hardly depends on the level.
ZSTD_LEVEL = 9
# A chunk is decoded whole to read any frame in it: keep it small enough that large frames do
# not make single-frame reads (contact sheets, samples) decode hundreds of megabytes.
MAX_CHUNK_BYTES = 64 << 20
CACHE_BYTES = 64 << 20  # decoded chunks one reader keeps (several chunks of 256 px frames)
# HDF5's fletcher32 filter, last in each dataset's pipeline: a checksum of every stored chunk that
# HDF5 checks on every read. Neither codec checks its input (zstd decodes a flipped byte into
# other pixels, silently), so without it a damaged file would be encoded as if it were whole.
CHECKSUM: dict[str, Any] = {"fletcher32": True}


@dataclass(frozen=True)
class FrameCodec:
    """The codec and time-chunk length frames are written with (render.codec, render.chunk_frames)."""

    name: str = "zstd"
    chunk_frames: int = 64

    def __post_init__(self) -> None:
        if self.name not in FRAME_CODECS:
            raise invalid_value("render.codec", self.name, " or ".join(FRAME_CODECS))
        if self.chunk_frames < 1:
            raise invalid_value("render.chunk_frames", self.chunk_frames, "a positive count")

    @classmethod
    def of(cls, render: RenderConfig) -> FrameCodec:
        """The codec the render settings ask for (the render and rollouts stages write with it)."""
        return cls(render.codec, render.chunk_frames)

    def chunk_rows(self, shape: tuple[int, ...]) -> int:
        """Frames per chunk for a (T, H, W, 3) dataset: at most the episode, and MAX_CHUNK_BYTES."""
        frame_bytes = max(1, math.prod(shape[1:]))
        return max(1, min(self.chunk_frames, shape[0], MAX_CHUNK_BYTES // frame_bytes))

    def dataset_options(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Keyword arguments of ``h5py.Group.create_dataset`` for uint8 frames of ``shape``."""
        chunks = (self.chunk_rows(shape), *shape[1:])
        if self.name == "lzf":
            return {"chunks": chunks, "compression": "lzf", **CHECKSUM}
        return {"chunks": chunks, **hdf5plugin.Zstd(clevel=ZSTD_LEVEL), **CHECKSUM}


LEGACY = FrameCodec("lzf", 1)  # the layout of the files written before the zstd codec


_FILTER_NAMES = {hdf5plugin.ZSTD_ID: "zstd", 32000: "lzf", h5py.h5z.FILTER_DEFLATE: "gzip",
                 h5py.h5z.FILTER_SHUFFLE: "shuffle", h5py.h5z.FILTER_FLETCHER32: "fletcher32"}


def codec_of(dataset: h5py.Dataset) -> str:
    """How ``dataset`` is stored, e.g. ``zstd, 64 frames per chunk``."""
    plist = dataset.id.get_create_plist()
    codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    names = [_FILTER_NAMES.get(code, f"filter {code}") for code in codes]
    rows = dataset.chunks[0] if dataset.chunks else dataset.shape[0]
    return f"{'+'.join(names) or 'uncompressed'}, {rows} frames per chunk"


def missing_filters(dataset: h5py.Dataset) -> list[str]:
    """Filters the dataset needs that this process's HDF5 cannot decode (name, id)."""
    plist = dataset.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            out.append(f"{(name or b'?').decode(errors='replace')} (HDF5 filter {code})")
    return out


class ChunkCache:
    """Reads rows of time-chunked datasets, keeping the last decoded chunks (LRU, bounded bytes).

    Whole chunks are read straight through; only a chunk a read covers in part is decoded into
    the cache, so the next read (the rest of that chunk) finds it there. Thread-safe: dask
    workers may run several tasks over one reader.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._chunks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.decoded = 0  # chunks decoded into the cache (a read of part of a chunk not cached)

    def read(self, dataset: h5py.Dataset, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of ``dataset`` (0 <= start < stop <= len)."""
        rows = dataset.chunks[0] if dataset.chunks else 0
        if rows <= 1:
            return np.asarray(dataset[start:stop])
        length = dataset.shape[0]
        head_end = min(stop, -(-start // rows) * rows)  # start, up to the next chunk boundary
        tail_start = max(head_end, stop // rows * rows)  # the last boundary before stop
        if stop == length:
            tail_start = stop  # a chunk that ends the dataset is whole when read to the end
        parts = []
        with self._lock:
            if start < head_end:
                parts.append(self._part(dataset, start, head_end, rows))
            if head_end < tail_start:
                parts.append(np.asarray(dataset[head_end:tail_start]))
            if tail_start < stop:
                parts.append(self._part(dataset, tail_start, stop, rows))
        if len(parts) == 1 and head_end < tail_start:
            return parts[0]  # whole chunks, read straight into a new array
        # A new array: the caller must not hold (or change) a view of a cached chunk.
        return np.concatenate(parts)

    def _part(self, dataset: h5py.Dataset, start: int, stop: int, rows: int) -> np.ndarray:
        """Rows of one chunk; the chunk is decoded whole and cached."""
        index = start // rows
        key = (dataset.name or "", index)
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = np.asarray(dataset[index * rows:min((index + 1) * rows, dataset.shape[0])])
            self.decoded += 1
            self._chunks[key] = chunk
            self._bytes += chunk.nbytes
            while self._bytes > self.max_bytes and len(self._chunks) > 1:
                _, dropped = self._chunks.popitem(last=False)
                self._bytes -= dropped.nbytes
        self._chunks.move_to_end(key)
        return chunk[start - index * rows:stop - index * rows]
