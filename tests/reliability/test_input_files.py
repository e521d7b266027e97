"""Every field of every input file: demos (pickle) and episode files (HDF5). Each corruption is
refused with an error naming the file and the field, and nothing built on it reads as done.

The cases are generated from the layouts, so a field added later needs one line here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from pipeline.envs.demos import STATE_KEYS, load_demos
from pipeline.errors import DemoValidationError, StoreError
from pipeline.store.episodes import Episode, EpisodeReader, EpisodeWriter
from tests.conftest import write_demo_pickle

T, OBS, ACT = 6, 39, 28


def door_demo(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {"observations": rng.normal(size=(T, OBS)), "actions": rng.normal(size=(T, ACT)),
            "rewards": rng.normal(size=T),
            "init_state_dict": {"qpos": rng.normal(size=30), "qvel": rng.normal(size=30),
                                "door_body_pos": rng.normal(size=3)}}


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        d = d[p]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()
DEMO_FIELDS = ["observations", "actions", "rewards"] + [f"init_state_dict.{k}"
                                                        for k in STATE_KEYS["door"]]


def demo_corruptions() -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []
    for field in DEMO_FIELDS:
        cases += [(field, "missing", _DELETE), (field, "text", np.array(["a"] * T)),
                  (field, "nan", "nan"), (field, "inf", "inf"), (field, "3-d", np.zeros((T, 2, 2))),
                  (field, "empty", np.zeros((0,)))]
    cases += [("observations", "wrong width", np.zeros((T, OBS + 1))),
              ("actions", "wrong width", np.zeros((T, ACT - 1))),
              ("actions", "short", np.zeros((T - 1, ACT))),
              ("init_state_dict.qpos", "wrong size", np.zeros(29)),
              ("init_state_dict", "not a dict", [1, 2])]
    return cases


@pytest.mark.parametrize("field, how, value", demo_corruptions(),
                         ids=[f"{f}-{h}" for f, h, _ in demo_corruptions()])
def test_every_demo_field_is_checked(tmp_path: Path, field: str, how: str, value: Any) -> None:
    demos = [door_demo(0), door_demo(1)]
    bad = copy.deepcopy(demos)
    if isinstance(value, str):  # poison one entry of the real array
        arr = np.array(bad[1][field] if "." not in field else
                       bad[1]["init_state_dict"][field.split(".")[1]], dtype=float)
        arr.flat[2] = float(value)
        value = arr
    _set(bad[1], field, value)
    path = tmp_path / "door-v0_demos.pickle"
    sha = write_demo_pickle(path, bad)
    with pytest.raises(DemoValidationError) as info:
        load_demos(path, "door", sha)
    text = str(info.value)
    assert str(path) in text and "demo[1]" in text and "Fix:" in text
    top = field.split(".")[0]
    assert top in text or how == "short"  # a length mismatch names the demo and its lengths


def test_demo_file_level_problems(tmp_path: Path) -> None:
    for raw, words in (([], "non-empty list"), ({"a": 1}, "non-empty list"), ([1], r"demo\[0\]")):
        path = tmp_path / "x.pickle"
        sha = write_demo_pickle(path, raw)  # type: ignore[arg-type]
        with pytest.raises(DemoValidationError, match=words):
            load_demos(path, "door", sha)


# --- episode files ---------------------------------------------------------------------------

CAMS = ("top",)


def write_episode_file(path: Path, episodes: int = 2) -> None:
    rng = np.random.default_rng(0)
    writer = EpisodeWriter(path, {"env_name": "door"}, "0" * 64, CAMS)
    for i in range(episodes):
        writer.write(i, Episode(
            frames={"top": rng.integers(0, 255, (T, 8, 8, 3), dtype=np.uint8)},
            actions=rng.normal(size=(T, ACT)), rewards=rng.normal(size=T),
            states=rng.normal(size=(T, 60)), proprio=rng.normal(size=(T, 24)),
            observations=rng.normal(size=(T, OBS)), attrs={"seed": i}))
    writer.close()


Corruption = Callable[[h5py.File], None]


def _replace(name: str, make: Callable[[h5py.Dataset], np.ndarray]) -> Corruption:
    def corrupt(f: h5py.File) -> None:
        old = f[name]
        data = make(old)
        del f[name]
        f.create_dataset(name, data=data)
    return corrupt


def _poison(name: str) -> Corruption:
    def make(old: h5py.Dataset) -> np.ndarray:
        data = old[()].astype(old.dtype)
        data.flat[1] = np.nan
        return data
    return _replace(name, make)


def episode_corruptions() -> list[tuple[str, Corruption]]:
    ep = "data/demo_1"
    fields = ["actions", "rewards", "dones", "states", "obs/proprio", "obs/state", "obs/top_image"]
    cases: list[tuple[str, Corruption]] = []
    for field in fields:
        name = f"{ep}/{field}"
        cases.append((f"{field}-missing", lambda f, n=name: f.__delitem__(n)))
        cases.append((f"{field}-short", _replace(name, lambda d: d[()][:-1])))
        cases.append((f"{field}-dtype", _replace(name, lambda d: d[()].astype("S8"))))
        if field in ("actions", "states", "obs/proprio", "obs/state", "rewards"):
            cases.append((f"{field}-nan", _poison(name)))
        if field in ("actions", "obs/proprio", "obs/state", "obs/top_image"):
            cases.append((f"{field}-width", _replace(
                name, lambda d: np.concatenate([d[()], d[()][:, :1]], axis=1))))
    cases += [
        ("image-float", _replace(f"{ep}/obs/top_image", lambda d: d[()].astype(np.float32))),
        ("image-gray", _replace(f"{ep}/obs/top_image", lambda d: d[()][..., :1])),
        ("num_samples", lambda f: f[ep].attrs.__setitem__("num_samples", 0)),
        ("env_args", lambda f: f["data"].attrs.__setitem__("env_args", "{not json")),
        ("cameras-missing", lambda f: f["data"].attrs.__delitem__("cameras")),
        ("cameras-empty", lambda f: f["data"].attrs.__setitem__("cameras", "[]")),
        ("source_sha256", lambda f: f["data"].attrs.__delitem__("source_sha256")),
        ("no-data-group", lambda f: f.__delitem__("data")),
    ]
    return cases


@pytest.mark.parametrize("name, corrupt", episode_corruptions(),
                         ids=[n for n, _ in episode_corruptions()])
def test_every_episode_field_is_checked(tmp_path: Path, name: str, corrupt: Corruption) -> None:
    path = tmp_path / "episodes.hdf5"
    write_episode_file(path)
    with EpisodeReader(path) as reader:  # the untouched file reads
        assert reader.num_rows == 2 * T
    with h5py.File(path, "r+") as f:
        corrupt(f)
    with pytest.raises(StoreError) as info:
        EpisodeReader(path)
    text = str(info.value)
    assert str(path) in text and "Fix:" in text
    assert "field" in text or "cannot open" in text


def test_unreadable_episode_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "episodes.hdf5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(StoreError, match="HDF5 cannot open it"):
        EpisodeReader(path)


@pytest.mark.gl
def test_encode_of_a_damaged_episode_file_writes_nothing(tiny_door_demos: tuple[Path, str],
                                                         tmp_path: Path) -> None:
    from pipeline.config import PipelineConfig
    from pipeline.runner import Runner
    from stages import STAGES

    path, sha = tiny_door_demos
    cfg = PipelineConfig().with_overrides({
        "demos.path": str(path), "demos.sha256": sha, "env.width": "32",
        "env.height": "32", "env.cameras": "top", "render.workers": "1",
        "encode.encoder": "resnet10t", "encode.weights": "random", "encode.resize": "32",
        "encode.crop": "32", "encode.workers": "1"})
    runner = Runner(cfg, STAGES, tmp_path, log=lambda m: None)
    render = runner.run("render")
    with h5py.File(render.out_dir / render.summary["episodes_file"], "r+") as f:
        _poison("data/demo_0/obs/proprio")(f)
    with pytest.raises(StoreError, match="obs/proprio"):
        runner.run("encode")
    assert not list((tmp_path / "encode").glob("*/manifest.json"))
