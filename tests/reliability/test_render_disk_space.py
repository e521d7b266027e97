"""A disk that fills up stops rendering with a clear error before a write fails; finished
episodes stay, and a re-run resumes (fault injection: the free-space reading is replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from pipeline.errors import StoreError
from pipeline.runner import Runner
from pipeline.store import space
from stages import STAGES
from tests.helpers import demo_config

pytestmark = pytest.mark.gl


def _config(demos: tuple[Path, str]) -> PipelineConfig:
    return demo_config(demos, {"env.width": "32", "env.height": "32", "env.cameras": "top",
                               "render.workers": "1"})


def test_full_disk_refused_before_rendering(tiny_door_demos: tuple[Path, str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(space, "disk_free", lambda folder: 10 << 20)
    with pytest.raises(StoreError, match="not enough free disk space") as info:
        Runner(_config(tiny_door_demos), STAGES, tmp_path, log=lambda m: None).run("render")
    assert "GB free" in str(info.value) and "resumes" in str(info.value)
    assert not list((tmp_path / "render").glob("*/manifest.json"))


def test_disk_filling_mid_render_keeps_finished_episodes(
        tiny_door_demos: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([1 << 40, 1 << 40])  # the up-front check and the first episode pass

    monkeypatch.setattr(space, "disk_free", lambda folder: next(readings, 1 << 20))
    cfg = _config(tiny_door_demos)
    with pytest.raises(StoreError, match="episode 1"):
        Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("render")
    assert not list((tmp_path / "render").glob("*/manifest.json"))
    monkeypatch.setattr(space, "disk_free", lambda folder: 1 << 40)
    logs: list[str] = []
    result = Runner(cfg, STAGES, tmp_path, log=logs.append).run("render")
    assert any("1 of 2 episodes already written" in m for m in logs)
    assert result.summary["episodes"] == 2


def test_headroom_is_in_proportion_to_the_job(tiny_door_demos: tuple[Path, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A 7 MB job on a disk with 40 MB free runs; a 700 MB job needs about 875 MB free."""
    assert space.headroom(7 << 20) == space.MIN_MARGIN_BYTES
    assert space.headroom(700 << 20) == 175 << 20
    monkeypatch.setattr(space, "disk_free", lambda folder: 40 << 20)
    space.require_free_space(tmp_path, 7 << 20, "a small job")  # no error
    with pytest.raises(StoreError, match=r"about 0\.9\d\d GB needed, 0\.04\d GB free"):
        space.require_free_space(tmp_path, 700 << 20, "a large job")
    result = Runner(_config(tiny_door_demos), STAGES, tmp_path, log=lambda m: None).run("render")
    assert result.summary["episodes"] == 2  # the tiny render fits in 40 MB
