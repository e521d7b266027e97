"""Demo validation: good files pass; bad ones fail naming the file, the field and the fix."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest

from pipeline.envs import demos as demos_mod
from pipeline.envs.demos import load_demos
from pipeline.errors import DemoUnavailableError, DemoValidationError
from tests.conftest import synthetic_door_demos, write_demo_pickle


@pytest.fixture(scope="module")
def raw_demos() -> list[dict]:
    return synthetic_door_demos(n=2, steps=6)


def test_real_door_demos_validate_against_the_pinned_checksum(door_demos_path: Path) -> None:
    demos, sha = load_demos(door_demos_path, "door")
    assert sha == demos_mod.PINS["door"].sha256
    assert len(demos) == 25 and sum(len(d) for d in demos) == 6729
    assert demos[0].observations.shape[1] == 39 and demos[0].actions.shape[1] == 28


def test_own_file_needs_its_checksum_named(tmp_path: Path, raw_demos: list[dict]) -> None:
    path = tmp_path / "door.pickle"
    sha = write_demo_pickle(path, raw_demos)
    with pytest.raises(DemoValidationError) as info:
        load_demos(path, "door")  # pinned upstream checksum does not match
    msg = str(info.value)
    assert str(path) in msg and "'sha256'" in msg and "DEMOS_SHA256" in msg
    demos, got = load_demos(path, "door", sha)
    assert got == sha and len(demos) == 2


def test_wrong_checksum(tmp_path: Path, raw_demos: list[dict]) -> None:
    path = tmp_path / "door.pickle"
    write_demo_pickle(path, raw_demos)
    with pytest.raises(DemoValidationError, match=r"checksum is [0-9a-f]{64}, expected 0{64}"):
        load_demos(path, "door", "0" * 64)


def test_truncated_file(tmp_path: Path, raw_demos: list[dict]) -> None:
    path = tmp_path / "door.pickle"
    sha = write_demo_pickle(path, raw_demos)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DemoValidationError) as info:
        load_demos(path, "door", sha)
    assert str(path) in str(info.value) and "truncated" in str(info.value)


def _expect_field_error(tmp_path: Path, demos: list[dict], field: str, words: list[str]) -> None:
    path = tmp_path / "bad.pickle"
    sha = write_demo_pickle(path, demos)
    with pytest.raises(DemoValidationError) as info:
        load_demos(path, "door", sha)
    msg = str(info.value)
    assert str(path) in msg and f"field {field!r}" in msg and "Fix:" in msg
    for word in words:
        assert word in msg


def test_nan_action(tmp_path: Path, raw_demos: list[dict]) -> None:
    bad = copy.deepcopy(raw_demos)
    bad[1]["actions"][3, 5] = np.nan
    _expect_field_error(tmp_path, bad, "demo[1].actions", ["NaN", "step 3"])


def test_wrong_observation_width(tmp_path: Path, raw_demos: list[dict]) -> None:
    bad = copy.deepcopy(raw_demos)
    bad[0]["observations"] = bad[0]["observations"][:, :30]
    _expect_field_error(tmp_path, bad, "demo[0].observations", ["(6, 30)", "(T, 39)", "TASK"])


def test_missing_state_key(tmp_path: Path, raw_demos: list[dict]) -> None:
    bad = copy.deepcopy(raw_demos)
    del bad[0]["init_state_dict"]["door_body_pos"]
    _expect_field_error(tmp_path, bad, "demo[0].init_state_dict", ["door_body_pos"])


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps([{"observations": Path("/etc/passwd")}]))
    with pytest.raises(DemoValidationError, match="refusing to load"):
        load_demos(path, "door")


def test_offline_without_a_local_file_says_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demos_mod, "UPSTREAM_URL", "http://127.0.0.1:9/{commit}/{file}")
    with pytest.raises(DemoUnavailableError) as info:
        demos_mod.fetch_demos("hammer", timeout=2)
    msg = str(info.value)
    assert "DEMOS=" in msg and "hammer-v0_demos.pickle" in msg and "downloaded" in msg
    assert not list(demos_mod.cache_dir("demos").glob("*.part"))
