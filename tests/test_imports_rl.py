"""Imports go one way: state-mode learning loads MuJoCo (and its GL context) only in the processes
that step envs. Each check runs in a fresh interpreter and reads its ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("mujoco", "gymnasium_robotics", "torch")


def loaded_after(code: str, *args: str) -> dict[str, bool]:
    """Which of HEAVY `code` left imported, run in a fresh interpreter."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))")
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


STATE_BC_AND_DAPG_SETUP = """
import sys
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.runner import Runner
from stages import STAGES
import stages.bc, stages.dapg, stages.evaluate
import pipeline.rl.trainer, pipeline.rl.sampler, pipeline.rl.vision, pipeline.rl.recording
from pipeline.rl.checkpoints import load_policy
from pipeline.rl.data import DataSource, demo_arrays
from pipeline.rl.policy import MLPBaseline

demos, sha, data = sys.argv[1:4]
cfg = PipelineConfig().with_overrides({"demos.path": demos, "demos.sha256": sha,
                                       "policy.obs_mode": "state", "bc.epochs": "1"})
bc = Runner(cfg, STAGES, data, log=lambda m: None).run("bc")   # the whole state-mode BC stage
policy = load_policy(bc.out_dir / bc.summary["checkpoint"])     # what dapg and evaluate load
src = DataSource.from_json(bc.summary["source"]).located(Path(data), data + "/features.zarr")
obs, act = demo_arrays(src, cfg.policy)
MLPBaseline(policy.obs_dim)
assert obs.shape[1] == policy.obs_dim
"""


def test_state_bc_and_everything_dapg_needs_before_sampling_load_no_mujoco(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, sha = tiny_door_demos
    loaded = loaded_after(STATE_BC_AND_DAPG_SETUP, str(path), sha, str(tmp_path / "data"))
    assert loaded == {"mujoco": False, "gymnasium_robotics": False, "torch": True}
    assert (tmp_path / "data" / "bc").is_dir()  # the stage really ran in that process


def test_rollout_types_and_the_loop_import_neither_mujoco_nor_torch() -> None:
    loaded = loaded_after("import pipeline.rl.rollouts, pipeline.rl.rollout_loop, "
                          "pipeline.rl.env_backends, pipeline.rl.vision, pipeline.rl.data")
    assert loaded == {"mujoco": False, "gymnasium_robotics": False, "torch": False}


def test_the_check_sees_mujoco_when_an_env_is_made() -> None:
    loaded = loaded_after("from pipeline.rl.env_backends import adroit_env\nadroit_env('door').close()")
    assert loaded["mujoco"] and loaded["gymnasium_robotics"]
