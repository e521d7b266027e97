"""Episode files (HDF5, robomimic layout) written by the render stage and read by encode.

    data/                       attrs: env_args (JSON), source_sha256, total, cameras (JSON)
      demo_<i>/                 attrs: num_samples, complete, model_state (JSON), fidelity (JSON)
        actions   (T, A) float32
        rewards   (T,)   float32
        dones     (T,)   bool
        states    (T, nq+nv) float64
        obs/<camera>_image (T, H, W, 3) uint8, one chunk per frame
        obs/proprio (T, 24) float32
        obs/state   (T, obs_dim) float32   the task's low-dimensional observation

A demo group counts only once its ``complete`` attribute is set, so an interrupted render resumes
by rewriting the unfinished group and skipping the finished ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import bad_store

IMAGE_SUFFIX = "_image"


def _demo_name(i: int) -> str:
    return f"demo_{i}"


def _demo_index(name: str) -> int:
    return int(name.split("_", 1)[1])


class EpisodeWriter:
    def __init__(self, path: Path, env_args: Mapping[str, Any], source_sha256: str,
                 cameras: tuple[str, ...]) -> None:
        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "a")
        except OSError:  # a crash mid-write can leave an unreadable file: start it over
            self.path.unlink(missing_ok=True)
            self.file = h5py.File(self.path, "a")
        self.root = self.file.require_group("data")
        self.root.attrs["env_args"] = json.dumps(env_args, sort_keys=True)
        self.root.attrs["source_sha256"] = source_sha256
        self.root.attrs["cameras"] = json.dumps(list(cameras))

    def completed(self) -> set[int]:
        return {_demo_index(n) for n, g in self.root.items() if g.attrs.get("complete", False)}

    def write(self, index: int, episode: Any) -> None:
        """Write one replayed episode (see ``pipeline.envs.replay.ReplayedEpisode``)."""
        name = _demo_name(index)
        if name in self.root:
            del self.root[name]
        g = self.root.create_group(name)
        steps = len(episode.actions)
        g.create_dataset("actions", data=episode.actions.astype(np.float32))
        g.create_dataset("rewards", data=episode.rewards.astype(np.float32))
        dones = np.zeros(steps, dtype=bool)
        dones[-1] = True
        g.create_dataset("dones", data=dones)
        g.create_dataset("states", data=episode.states)
        obs = g.create_group("obs")
        for cam, frames in episode.frames.items():
            obs.create_dataset(f"{cam}{IMAGE_SUFFIX}", data=frames, chunks=(1, *frames.shape[1:]),
                               compression="lzf")
        obs.create_dataset("proprio", data=episode.proprio.astype(np.float32))
        obs.create_dataset("state", data=episode.observations.astype(np.float32))
        g.attrs["num_samples"] = steps
        g.attrs["model_state"] = json.dumps({k: np.asarray(v).tolist() for k, v in episode.model_state.items()})
        g.attrs["fidelity"] = json.dumps(episode.fidelity)
        g.attrs["complete"] = True
        self.file.flush()

    def close(self) -> None:
        done = sorted(self.completed())
        self.root.attrs["total"] = int(sum(self.root[_demo_name(i)].attrs["num_samples"] for i in done))
        self.file.close()


class EpisodeReader:
    """Read-only access in episode order; rows are numbered across episodes, demo_0 first."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise bad_store(str(self.path), "episode file does not exist", "run `rrl run render` first")
        self.file = h5py.File(self.path, "r")
        root = self.file["data"]
        self.names = sorted(
            (n for n, g in root.items() if g.attrs.get("complete", False)), key=_demo_index
        )
        self.groups = [root[n] for n in self.names]
        self.lengths = np.array([g.attrs["num_samples"] for g in self.groups], dtype=np.int64)
        self.episode_ends = np.cumsum(self.lengths)
        self.env_args: dict[str, Any] = json.loads(root.attrs["env_args"])
        self.source_sha256 = str(root.attrs["source_sha256"])
        self.cameras: list[str] = json.loads(root.attrs["cameras"])

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def num_rows(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def frame_shape(self, camera: str) -> tuple[int, ...]:
        return tuple(self.groups[0]["obs"][camera + IMAGE_SUFFIX].shape[1:])

    def read_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of ``key`` (a camera name, or an ``obs/...``/top-level dataset)."""
        path = f"obs/{key}{IMAGE_SUFFIX}" if key in self.cameras else key
        parts = []
        starts = self.episode_ends - self.lengths
        for g, lo, hi in zip(self.groups, starts, self.episode_ends, strict=True):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                parts.append(g[path][a - lo:b - lo])
        if not parts:
            raise IndexError(f"rows [{start}, {stop}) outside 0..{self.num_rows}")
        return np.concatenate(parts)

    def read_all(self, key: str) -> np.ndarray:
        return self.read_rows(key, 0, self.num_rows)

    def attrs(self, index: int) -> dict[str, Any]:
        g = self.groups[index]
        return {k: json.loads(v) if k in ("fidelity", "model_state") else v for k, v in g.attrs.items()}

    def close(self) -> None:
        self.file.close()
