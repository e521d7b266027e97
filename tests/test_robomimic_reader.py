"""robomimic reads our episode files with the one import docs/episode_files.md asks for.

robomimic 0.3.0's ``SequenceDataset`` (installed by ``make install`` without its training
dependencies, see the Makefile) runs in a fresh interpreter that imports ``hdf5plugin`` and
nothing of this project. The same h5py calls its dataset code makes are also checked on their
own, so a checkout without robomimic still tests the file layout it relies on.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.store.episodes import Episode, EpisodeWriter
from pipeline.store.frames import FrameCodec

LENGTHS = (11, 30)


def write_episodes(path: Path) -> list[Episode]:
    rng = np.random.default_rng(0)
    episodes = []
    for steps in LENGTHS:
        base = rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
        frames = np.repeat(base, steps, axis=0)
        frames[:, 4, :, 0] = np.arange(steps)[:, None]  # a changing line: every frame differs
        episodes.append(Episode(frames={"top": frames}, actions=rng.normal(size=(steps, 4)),
                                rewards=rng.normal(size=steps), states=rng.normal(size=(steps, 7)),
                                proprio=rng.normal(size=(steps, 24)),
                                observations=rng.normal(size=(steps, 9))))
    writer = EpisodeWriter(path, {"env_name": "door"}, "sha", ("top",), codec=FrameCodec("zstd", 8))
    for i, ep in enumerate(episodes):
        writer.write(i, ep)
    writer.close()
    return episodes


def run_clean(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter that has neither this project's imports nor a plugin path."""
    env = {k: v for k, v in os.environ.items() if k not in ("HDF5_PLUGIN_PATH", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd="/")


ROBOMIMIC_H5PY_CALLS = """
import sys
import hdf5plugin  # the documented import
import h5py, numpy as np
# robomimic.utils.dataset.SequenceDataset: hdf5_file, load_demo_info, get_sequence_from_demo,
# load_dataset_in_memory (hdf5_cache_mode="all").
f = h5py.File(sys.argv[1], "r", swmr=True, libver="latest")
demos = list(f["data"].keys())
demos = [demos[i] for i in np.argsort([int(d[5:]) for d in demos])]
lengths = [f["data/{}".format(d)].attrs["num_samples"] for d in demos]
frames = np.concatenate([f["data/{}/obs/top_image".format(d)][0:n] for d, n in zip(demos, lengths)])
whole = np.concatenate([f["data/{}/obs/{}".format(d, "top_image")][()] for d in demos])
actions = np.concatenate([f["data/{}/actions".format(d)][()].astype("float32") for d in demos])
f.close()
np.savez(sys.argv[2], frames=frames, whole=whole, actions=actions, lengths=lengths)
"""


def test_robomimic_h5py_calls_read_the_file_with_hdf5plugin(tmp_path: Path) -> None:
    path, out = tmp_path / "episodes.hdf5", tmp_path / "read.npz"
    episodes = write_episodes(path)
    proc = run_clean(ROBOMIMIC_H5PY_CALLS, str(path), str(out))
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    want = np.concatenate([e.frames["top"] for e in episodes])
    assert np.array_equal(got["frames"], want) and np.array_equal(got["whole"], want)
    assert list(got["lengths"]) == list(LENGTHS)
    assert np.array_equal(got["actions"], np.concatenate([e.actions for e in episodes]).astype(np.float32))


ROBOMIMIC_DATASET = """
import sys
import hdf5plugin  # the documented import
import numpy as np
from robomimic.utils.dataset import SequenceDataset
assert "pipeline" not in sys.modules
data = SequenceDataset(sys.argv[1], obs_keys=("top_image", "proprio"),
                       dataset_keys=("actions", "rewards", "dones"), frame_stack=2, seq_length=3,
                       load_next_obs=False, hdf5_cache_mode=None)
items = [data[i] for i in range(len(data))]
np.savez(sys.argv[2], frames=np.stack([it["obs"]["top_image"] for it in items]),
         actions=np.stack([it["actions"] for it in items]))
"""


def windows(frames: np.ndarray, stack: int, seq: int) -> np.ndarray:
    """robomimic's sequences: frames t-stack+1 .. t+seq-1, padded by repeating the edge frames."""
    n = len(frames)
    index = np.clip(np.arange(-(stack - 1), seq)[None] + np.arange(n)[:, None], 0, n - 1)
    return frames[index]


@pytest.mark.skipif(importlib.util.find_spec("robomimic") is None,
                    reason="robomimic is not installed (`make install` installs it, --no-deps)")
def test_robomimic_sequence_dataset_reads_the_file(tmp_path: Path) -> None:
    # Without the import, h5py cannot decode the frames (tests/test_episode_codec.py shows it).
    path, out = tmp_path / "episodes.hdf5", tmp_path / "read.npz"
    episodes = write_episodes(path)
    proc = run_clean(ROBOMIMIC_DATASET, str(path), str(out))
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    want = np.concatenate([windows(e.frames["top"], 2, 3) for e in episodes])
    assert got["frames"].shape == (sum(LENGTHS), 4, 16, 16, 3)
    assert np.array_equal(got["frames"], want)
    actions = np.concatenate([windows(e.actions.astype(np.float32), 2, 3) for e in episodes])
    assert np.array_equal(got["actions"], actions)
