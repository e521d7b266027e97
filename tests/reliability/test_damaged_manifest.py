"""A manifest is an output's "done" marker: one that cannot be read, or that names another key,
makes the output not done (status says so, the next run checks or redoes it), never a traceback
and never an output used on a damaged word. An experiment's record of its cells' keys, which only
explains staleness, reads as no record when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.manifests import MANIFEST, latest_manifest, read_manifest
from pipeline.runner import Runner
from stages import STAGES
from tests.helpers import demo_config


def truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def other_key(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["key"] = "f" * 64
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", [truncate, other_key, lambda p: p.write_text("[]")],
                         ids=["truncated", "other-key", "not-an-object"])
def test_a_damaged_manifest_reads_as_not_done_and_the_run_redoes_it(  # type: ignore[no-untyped-def]
        tiny_door_demos, tmp_path, damage) -> None:
    messages: list[str] = []
    runner = Runner(demo_config(tiny_door_demos), STAGES, tmp_path, log=messages.append)
    first = runner.run("demos")
    path = first.out_dir / MANIFEST
    damage(path)
    assert read_manifest(path) is None and latest_manifest(tmp_path / "demos") is None
    status = runner.stage_status("demos")
    assert status.state == "missing", status
    assert any("cannot be read or names another key" in m for m in messages)
    again = runner.run("demos")
    assert not again.cache_hit and again.key == first.key
    assert read_manifest(path) == again.manifest
    assert runner.run("demos").cache_hit


@pytest.mark.parametrize("text", ["{\"cell\": {\"keys\"", "[1, 2]"], ids=["truncated", "a-list"])
def test_a_damaged_experiment_record_reads_as_no_record(tmp_path: Path, text: str) -> None:
    # cells.json only says why a cell went stale: a damaged one must not stop `experiment status`.
    from pipeline.study.cells import RECORD, read_record

    (tmp_path / RECORD).write_text(text)
    assert read_record(tmp_path) == {}


def test_a_damaged_release_description_is_refused_with_a_fix(tmp_path: Path) -> None:
    import shutil

    from pipeline.errors import StoreError
    from pipeline.study.release import read_release

    release = tmp_path / "door_vae"
    shutil.copytree(Path(__file__).resolve().parents[2] / "results" / "door_vae", release)
    truncate(release / "release.json")
    with pytest.raises(StoreError, match=r"release\.json: cannot be read as a JSON object\. "
                                         r"Fix: restore it from git"):
        read_release(release)
