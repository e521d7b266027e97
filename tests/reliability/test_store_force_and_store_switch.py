"""The encode stage on tiny renders: FORCE=1 really rebuilds a damaged or foreign group; a group
found in the store is verified before it is used; switching STORE= to a bucket after a local
encode puts the group in the bucket; and the runner hooks those rely on (force, check_done)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from pipeline.config import PipelineConfig
from pipeline.errors import StoreError
from pipeline.outputs import result_store
from pipeline.runner import MANIFEST, Runner, Stage, StageContext, StageResult
from pipeline.store import features as fs
from pipeline.store.verify import verify_group
from stages import STAGES
from tests.helpers import demo_config

TINY = {"env.width": "48", "env.height": "48", "env.cameras": "top,fixed",
        "render.workers": "1", "encode.encoder": "resnet10t", "encode.weights": "random",
        "encode.resize": "48", "encode.crop": "40", "encode.workers": "2", "encode.batch_size": "8"}
CAMERAS = ("top", "fixed")


def config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    return demo_config(demos, TINY, **extra)


def run(cfg: PipelineConfig, data: Path, **kw: Any) -> StageResult:
    return Runner(cfg, STAGES, data, log=lambda m: None).run("encode", **kw)


def group_files(root: str, key: str) -> dict[str, bytes]:
    base = Path(root) / key
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.relative_to(base).parts[0] in (*CAMERAS, "_shard_sha256")}


@pytest.fixture(scope="module")
def encoded(tiny_door_demos, tmp_path_factory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("data")
    result = run(config(tiny_door_demos), data)
    return data, result, group_files(result_store(result), result.key)


@pytest.fixture
def workspace(encoded, tmp_path):  # type: ignore[no-untyped-def]
    """A private copy of the encoded workspace: (data dir, store root, key, files)."""
    data, result, files = encoded
    shutil.copytree(data, tmp_path / "data")
    return tmp_path / "data", str(tmp_path / "data" / "features.zarr"), result.key, files


@pytest.mark.gl
def test_force_rebuilds_a_damaged_group_that_verification_reports(tiny_door_demos, workspace) -> None:  # type: ignore[no-untyped-def]
    data, root, key, files = workspace
    fixed = zarr.open_array(root, path=f"{key}/fixed", mode="r+")
    fixed[:] = np.zeros(fixed.shape, fixed.dtype)  # every row of the fixed camera lost
    report = verify_group(root, key)
    assert not report.ok
    assert any("camera 'fixed' shard 0" in p and "do not match" in p for p in report.problems)
    assert report.zero_rows == {"fixed": fixed.shape[0]} and report.zero_row_episodes == {"fixed": [0, 1]}

    (data / "encode" / key[:12] / MANIFEST).unlink()  # found in the store, not made here
    with pytest.raises(StoreError, match=r"verification failed.*shard 0.*Fix: re-encode.*FORCE=1"):
        run(config(tiny_door_demos), data)
    forced = run(config(tiny_door_demos), data, force=True)
    assert forced.summary["shards_written"] == 2 and forced.summary["verified"]["ok"]
    assert group_files(root, key) == files  # byte-identical to the first encode
    assert verify_group(root, key).ok


@pytest.mark.gl
def test_force_replaces_a_foreign_group_under_the_key(tiny_door_demos, workspace) -> None:  # type: ignore[no-untyped-def]
    data, root, key, files = workspace
    meta_path = Path(root) / key / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"].update(feature_dim=64, complete=False)  # someone else's, unfinished
    meta.pop("consolidated_metadata", None)
    meta_path.write_text(json.dumps(meta))
    (data / "encode" / key[:12] / MANIFEST).unlink()
    with pytest.raises(StoreError, match=r"feature_dim=64.*FORCE=1"):
        run(config(tiny_door_demos), data)
    assert run(config(tiny_door_demos), data, force=True).summary["verified"]["ok"]
    assert group_files(root, key) == files


@pytest.mark.gl
def test_switching_store_to_a_bucket_copies_the_local_group_there(
        tiny_door_demos, workspace, s3, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data, root, key, _ = workspace
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
    url = "s3://rrl-test/switched"
    assert not fs.is_complete(url, key)
    result = run(config(tiny_door_demos, **{"encode.store": url}), data)
    assert result.key == key and "shards_written" not in result.summary  # copied, not encoded
    assert result_store(result) == url and result.summary["verified"]["ok"]
    manifest = json.loads((data / "encode" / key[:12] / MANIFEST).read_text())
    assert manifest["summary"]["store"] == url  # downstream stages read from the bucket
    assert verify_group(url, key).ok
    for cam in CAMERAS:
        np.testing.assert_array_equal(fs.open_features(url, key).read(cam),
                                      fs.open_features(root, key).read(cam))
    again = run(config(tiny_door_demos, **{"encode.store": url}), data)
    assert again.cache_hit and again.summary["store"] == url


@pytest.mark.gl
def test_a_manifest_whose_store_lost_the_group_is_not_a_cache_hit(tiny_door_demos, workspace) -> None:  # type: ignore[no-untyped-def]
    data, root, key, files = workspace
    shutil.rmtree(root)
    status = {s.name: s for s in Runner(config(tiny_door_demos), STAGES, data).status()}
    assert status["encode"].state == "stale" and "does not hold the complete group" in status["encode"].reason
    result = run(config(tiny_door_demos), data)
    assert not result.cache_hit and result.summary["shards_written"] == 2
    assert group_files(root, key) == files


# --- the runner hooks, on a toy stage ----------------------------------------------------------

def _toy_stage(calls: list[str], where: Path) -> Stage:
    def run_toy(ctx: StageContext) -> dict[str, Any]:
        calls.append(f"run force={ctx.force}")
        where.write_text("made")
        return {}

    def check_done(ctx: StageContext, thorough: bool) -> str | None:
        calls.append("check" if thorough else "cheap check")
        return None if where.exists() else "the output is gone"

    return Stage(
        name="toy", version="1", upstream=(), inputs=lambda c: {}, run=run_toy, check_done=check_done
    )


def test_runner_asks_check_done_on_a_cache_hit_and_passes_force(tmp_path: Path) -> None:
    calls: list[str] = []
    output = tmp_path / "output.txt"
    runner = Runner(PipelineConfig(), {"toy": _toy_stage(calls, output)}, tmp_path / "data",
                    log=lambda m: None)
    assert not runner.run("toy").cache_hit and calls == ["run force=False"]
    assert runner.run("toy").cache_hit and calls[1:] == ["check"]
    output.unlink()  # the manifest is there, the output is not
    assert not runner.run("toy").cache_hit and calls[2:] == ["check", "run force=False"]
    assert not runner.run("toy", force=True).cache_hit and calls[4:] == ["run force=True"]
