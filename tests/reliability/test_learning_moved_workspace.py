"""A data folder can be moved: the learning stages' manifests name their files relative to the
folder, so after a move every stage is a cache hit and re-running one finds its inputs there."""

from __future__ import annotations

import shutil

import pytest

from pipeline.config import PipelineConfig
from pipeline.rl.data import DataSource, demo_arrays
from pipeline.runner import MANIFEST, Runner
from stages import STAGES

pytestmark = [pytest.mark.gl, pytest.mark.slow]  # three stages, three sampler start-ups: ~40 s

TINY_STATE = {"policy.obs_mode": "state", "dapg.iterations": "2", "dapg.trajectories": "4",
              "env.horizon": "20", "dapg.eval_episodes": "1", "dapg.envs": "4",
              "evaluate.episodes": "3", "evaluate.video_episodes": "0"}


def test_moved_data_folder_is_all_cache_hits_and_resolves(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, sha = tiny_door_demos
    cfg = PipelineConfig().with_overrides({"demos.path": str(path), "demos.sha256": sha,
                                           **TINY_STATE})
    a, b = tmp_path / "A", tmp_path / "B"
    first = Runner(cfg, STAGES, a, log=lambda m: None).run("evaluate")
    first_dapg = Runner(cfg, STAGES, a).result("dapg")
    assert first_dapg is not None
    shutil.move(a, b)

    moved = Runner(cfg, STAGES, b, log=lambda m: None)
    again = moved.run("evaluate")
    assert again.cache_hit and again.summary == first.summary
    assert all(moved.result(s) is not None for s in ("demos", "bc", "dapg", "evaluate"))
    # A no longer exists: re-running evaluate in B loads the DAPG checkpoint from B and
    # reproduces A's numbers, and the recorded data source finds the demos copy in B.
    assert not a.exists()
    evaluated = Runner(cfg, STAGES, b, log=lambda m: None).run("evaluate", force=True)
    assert not evaluated.cache_hit and evaluated.summary == first.summary
    source = DataSource.from_json(first_dapg.summary["source"]).located(b, str(b / "features.zarr"))
    obs, act = demo_arrays(source, cfg.policy)
    assert obs.shape == (24, 39) and act.shape == (24, 28)

    manifests = list(b.rglob(MANIFEST))
    assert len(manifests) == 4
    for manifest in manifests:
        assert str(a) not in manifest.read_text(), manifest
        assert str(b) not in manifest.read_text(), manifest
