"""The demos and render stages end to end on tiny demos: HDF5 layout, fidelity, cache, status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.config import PipelineConfig
from pipeline.runner import Runner
from pipeline.store.frames import codec_of
from stages import STAGES
from tests.helpers import demo_config

pytestmark = pytest.mark.gl


def tiny_config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    """Tiny renders; ``extra`` are dotted overrides (``**{"env.shadows": "true"}``)."""
    return demo_config(demos, {"env.width": "48", "env.height": "48", "env.cameras": "top,fixed",
                               "render.workers": "2"}, **extra)


@pytest.fixture(scope="module")
def rendered(tiny_door_demos: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("data")
    result = Runner(tiny_config(tiny_door_demos), STAGES, data, log=lambda m: None).run("render")
    return data, result


def test_episode_file_has_the_robomimic_layout(rendered) -> None:  # type: ignore[no-untyped-def]
    _, result = rendered
    with h5py.File(result.out_dir / "episodes.hdf5", "r") as f:
        root = f["data"]
        assert sorted(root) == ["demo_0", "demo_1"]
        assert json.loads(root.attrs["env_args"])["env_name"] == "door"
        assert len(root.attrs["source_sha256"]) == 64
        demo = root["demo_1"]
        steps = demo["actions"].shape[0]
        assert steps == 12 and demo["actions"].shape == (12, 28)
        assert demo["rewards"].shape == (12,) and demo["dones"][-1] and not demo["dones"][0]
        assert demo["states"].shape == (12, 60)
        for cam in ("top", "fixed"):
            images = demo[f"obs/{cam}_image"]
            assert images.shape == (12, 48, 48, 3) and images.dtype == np.uint8
            # Chunked along time (one chunk: the episode is shorter than render.chunk_frames).
            assert images.chunks == (12, 48, 48, 3) and codec_of(images).startswith("zstd")
            assert images[5].std() > 5
        assert demo["obs/proprio"].shape == (12, 24) and demo["obs/state"].shape == (12, 39)
        assert not np.array_equal(demo["obs/top_image"][0], demo["obs/fixed_image"][0])


def test_states_replay_of_own_recordings_is_faithful(rendered) -> None:  # type: ignore[no-untyped-def]
    _, result = rendered
    fid = result.summary["fidelity"]
    assert result.summary["frames_per_camera"] == 24 and result.summary["episodes"] == 2
    assert fid["max_joint_diff"] == 0.0 and fid["within_tolerance_episodes"] == 2
    assert (result.out_dir / result.summary["contact_sheet"]).stat().st_size > 1000


def test_open_loop_replay_of_own_recordings_reproduces_them(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(tiny_door_demos, **{"render.replay": "open_loop", "render.workers": "1",
                                          "env.cameras": "top"})
    result = Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("render")
    fid = result.summary["fidelity"]
    # Recorded with the same simulator from the same initial state: replay is exact.
    assert fid["max_abs_obs_diff"] < 1e-9
    assert "success_at_end" in fid and "ever_success" in fid


def test_interrupted_render_resumes_unfinished_episodes(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(tiny_door_demos, **{"render.workers": "1", "env.cameras": "top"})
    runner = Runner(cfg, STAGES, tmp_path, log=lambda m: None)
    full = runner.run("render")
    episodes = full.out_dir / "episodes.hdf5"
    (full.out_dir / "manifest.json").unlink()
    with h5py.File(episodes, "a") as f:  # as if the process died while writing demo_1
        f["data/demo_1"].attrs["complete"] = False
    logs: list[str] = []
    again = Runner(cfg, STAGES, tmp_path, log=logs.append).run("render")
    assert any("1 of 2 episodes already written" in m for m in logs)
    with h5py.File(episodes, "r") as f:
        assert f["data/demo_1"].attrs["complete"] and f["data/demo_1/actions"].shape == (12, 28)
    assert again.summary["episodes"] == 2


CACHE_HIT = """
import json, sys
from pipeline.config import PipelineConfig
from pipeline.runner import Runner
from stages import STAGES

overrides, data = json.loads(sys.argv[1]), sys.argv[2]
result = Runner(PipelineConfig().with_overrides(overrides), STAGES, data, log=lambda m: None).run("render")
print(json.dumps({"cache_hit": result.cache_hit,
                  "loaded": [m for m in ("mujoco", "torch", "h5py") if m in sys.modules]}))
"""


def test_a_render_cache_hit_imports_neither_mujoco_nor_torch(rendered, tiny_door_demos) -> None:  # type: ignore[no-untyped-def]
    """Checked in a fresh interpreter's sys.modules: keys and cache hits stay import-light."""
    data, _ = rendered
    path, sha = tiny_door_demos
    overrides = {"demos.path": str(path), "demos.sha256": sha, "env.width": "48",
                 "env.height": "48", "env.cameras": "top,fixed", "render.workers": "2"}
    assert tiny_config(tiny_door_demos) == PipelineConfig().with_overrides(overrides)
    proc = subprocess.run([sys.executable, "-c", CACHE_HIT, json.dumps(overrides), str(data)],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"cache_hit": True, "loaded": []}
