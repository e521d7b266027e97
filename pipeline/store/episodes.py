"""Episode files (HDF5, robomimic layout) written by the render stage and read by encode.

    data/                       attrs: env_args (JSON), source_sha256, total, cameras (JSON),
                                       info (JSON: who wrote the file and how)
      demo_<i>/                 attrs: num_samples, complete, and each of the episode's own
                                       attrs as JSON (render: fidelity, model_state;
                                       rollouts: success, return, seed)
        actions   (T, A) float32
        rewards   (T,)   float32
        dones     (T,)   bool
        states    (T, nq+nv) float64
        obs/<camera>_image (T, H, W, 3) uint8, chunked along time and compressed losslessly
                                       (``frames.FrameCodec``: zstd over 64-frame chunks by
                                       default; files of lzf one-frame chunks read the same)
        obs/proprio (T, 24) float32
        obs/state   (T, obs_dim) float32   the task's low-dimensional observation

Every dataset carries HDF5's fletcher32 checksum per chunk, checked by HDF5 on every read: a
changed byte is an error naming the file and the field, never other pixels (files written before
the checksums read as before, unchecked). A demo group counts only once its ``complete``
attribute is set, so an interrupted render resumes by rewriting the unfinished group and skipping
the finished ones. A file that HDF5 cannot open is moved aside, never deleted; one that another
process holds open is refused.

Frames compressed with zstd need the ``hdf5plugin`` filters, which ``pipeline.store.frames``
registers on import; a plain h5py or robomimic reader must ``import hdf5plugin`` first.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import bad_store
from pipeline.fileio import fsync_file
from pipeline.store.episode_checks import check_episode_file, unreadable
from pipeline.store.frames import CHECKSUM, ChunkCache, FrameCodec

IMAGE_SUFFIX = "_image"
_GROUP_ATTRS = ("num_samples", "complete")  # written by the writer itself, not JSON


@dataclass
class Episode:
    """One episode as stored: row t of every array is step t (the state action t was taken in)."""

    frames: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8
    actions: np.ndarray  # (T, A)
    rewards: np.ndarray  # (T,)
    states: np.ndarray  # (T, nq + nv)
    proprio: np.ndarray  # (T, 24)
    observations: np.ndarray  # (T, obs_dim) the task's low-dimensional observation
    attrs: dict[str, Any] = field(default_factory=dict)  # JSON-able, per episode


def _demo_name(i: int) -> str:
    return f"demo_{i}"


def _demo_index(name: str) -> int:
    return int(name.split("_", 1)[1])


def _held_elsewhere(path: Path, exc: OSError) -> bool:
    """Whether `path` is locked by another process (HDF5 locks files it has open)."""
    if isinstance(exc, BlockingIOError) or exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
        return True
    if "unable to lock file" in str(exc):
        return True
    try:
        with open(path, "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def open_for_append(path: Path, log: Callable[[str], None] | None = None) -> h5py.File:
    """Open (or create) an episode file to add episodes to.

    An unreadable file (a crash mid-write) is moved to ``<name>.corrupt-<UTC time>`` and started
    over; a file another process has open is refused, since it may be that process's data.
    """
    try:
        return h5py.File(path, "a")
    except OSError as exc:
        if not path.is_file():
            raise
        if _held_elsewhere(path, exc):
            raise bad_store(str(path), "the episode file is open in another process (HDF5 file "
                            "lock)", "wait for that process to finish or stop it, then re-run; "
                            "do not delete the file while it is in use") from exc
        if isinstance(exc, PermissionError) or not os.access(path, os.R_OK | os.W_OK):
            raise bad_store(str(path), f"the episode file cannot be opened for writing ({exc})",
                            "make it and its folder writable, or use another DATA folder") from exc
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        path.rename(aside)
        (log or logging.getLogger(__name__).warning)(
            f"{path} could not be opened ({exc}); moved it to {aside} and starting over")
        return h5py.File(path, "a")


class EpisodeWriter:
    """Adds whole episodes to an episode file, one at a time; ``codec``: how frames are stored."""

    def __init__(self, path: Path, env_args: Mapping[str, Any], source_sha256: str,
                 cameras: tuple[str, ...], info: Mapping[str, Any] | None = None,
                 log: Callable[[str], None] | None = None,
                 codec: FrameCodec | None = None) -> None:
        self.path = Path(path)
        self.codec = codec or FrameCodec()
        self.file = open_for_append(self.path, log)
        self.root = self.file.require_group("data")
        self.root.attrs["env_args"] = json.dumps(env_args, sort_keys=True)
        self.root.attrs["source_sha256"] = source_sha256
        self.root.attrs["cameras"] = json.dumps(list(cameras))
        if info is not None:
            self.root.attrs["info"] = json.dumps(info, sort_keys=True)

    def completed(self) -> set[int]:
        return {_demo_index(n) for n, g in self.root.items() if g.attrs.get("complete", False)}

    def write(self, index: int, episode: Episode) -> None:
        name = _demo_name(index)
        if name in self.root:
            del self.root[name]
        g = self.root.create_group(name)
        steps = len(episode.actions)
        g.create_dataset("actions", data=episode.actions.astype(np.float32), **CHECKSUM)
        g.create_dataset("rewards", data=episode.rewards.astype(np.float32), **CHECKSUM)
        dones = np.zeros(steps, dtype=bool)
        dones[-1] = True
        g.create_dataset("dones", data=dones, **CHECKSUM)
        g.create_dataset("states", data=episode.states, **CHECKSUM)
        obs = g.create_group("obs")
        for cam, frames in episode.frames.items():
            obs.create_dataset(f"{cam}{IMAGE_SUFFIX}", data=frames,
                               **self.codec.dataset_options(frames.shape))
        obs.create_dataset("proprio", data=episode.proprio.astype(np.float32), **CHECKSUM)
        obs.create_dataset("state", data=episode.observations.astype(np.float32), **CHECKSUM)
        g.attrs["num_samples"] = steps
        for key, value in episode.attrs.items():
            if key in _GROUP_ATTRS:
                raise bad_store(f"{self.path}:{name}", f"episode attribute {key!r} is reserved "
                                "for the writer", f"name it other than {', '.join(_GROUP_ATTRS)}")
            g.attrs[key] = json.dumps(value)
        g.attrs["complete"] = True
        self.file.flush()

    def close(self) -> None:
        done = sorted(self.completed())
        self.root.attrs["total"] = int(sum(self.root[_demo_name(i)].attrs["num_samples"] for i in done))
        self.file.close()
        fsync_file(self.path)  # h5py only flushes to the OS; the manifest comes next


class EpisodeReader:
    """Read-only access in episode order; rows are numbered across episodes, demo_0 first."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise bad_store(str(self.path), "episode file does not exist", "run `rrl run render` first")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise bad_store(str(self.path), f"HDF5 cannot open it ({exc})",
                            "re-run the stage that wrote it with FORCE=1") from None
        root = self.file.get("data")
        self.names = sorted(
            (n for n, g in root.items() if g.attrs.get("complete", False)), key=_demo_index
        ) if isinstance(root, h5py.Group) else []
        try:
            check_episode_file(self.path, self.file, self.names)
        except BaseException:
            self.file.close()
            raise
        assert isinstance(root, h5py.Group)
        self.groups = [root[n] for n in self.names]
        self._frames = ChunkCache()
        self.lengths = np.array([g.attrs["num_samples"] for g in self.groups], dtype=np.int64)
        self.episode_ends = np.cumsum(self.lengths)
        self.env_args: dict[str, Any] = json.loads(root.attrs["env_args"])
        self.source_sha256 = str(root.attrs["source_sha256"])
        self.cameras: list[str] = json.loads(root.attrs["cameras"])
        self.info: dict[str, Any] = json.loads(root.attrs.get("info", "{}"))

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def num_rows(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def frame_shape(self, camera: str) -> tuple[int, ...]:
        return tuple(self.groups[0]["obs"][camera + IMAGE_SUFFIX].shape[1:])

    def stored_frame_bytes(self, camera: str) -> int:
        """Bytes the camera's frames take in the file (compressed), over all episodes."""
        return sum(int(g["obs"][camera + IMAGE_SUFFIX].id.get_storage_size()) for g in self.groups)

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of ``key`` (a camera name, or an ``obs/...``/top-level dataset)."""
        path = f"obs/{key}{IMAGE_SUFFIX}" if key in self.cameras else key
        parts = []
        starts = self.episode_ends - self.lengths
        for g, lo, hi in zip(self.groups, starts, self.episode_ends, strict=True):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                data = g[path]
                try:
                    parts.append(self._frames.read(data, a - lo, b - lo) if key in self.cameras
                                 else data[a - lo:b - lo])
                except OSError as exc:
                    raise unreadable(self.path, f"{g.name}/{path}", exc) from None
        if not parts:
            raise IndexError(f"rows [{start}, {stop}) outside 0..{self.num_rows}")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def read_all(self, key: str) -> np.ndarray:
        return self.read_rows(key, 0, self.num_rows)

    def attrs(self, index: int) -> dict[str, Any]:
        """The episode's own attributes (``Episode.attrs``), decoded."""
        g = self.groups[index]
        return {k: json.loads(v) for k, v in g.attrs.items() if k not in _GROUP_ATTRS}

    def close(self) -> None:
        self.file.close()
