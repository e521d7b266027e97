"""Learning stages never mark NaN or infinite results done: BC (losses, parameters), DAPG (each
iteration's parameters and log row; the last good checkpoint survives), evaluate (returns)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import DAPGConfig, PipelineConfig
from pipeline.errors import NonFiniteError
from pipeline.rl.checkpoints import load_checkpoint, save_checkpoint
from pipeline.runner import MANIFEST, Runner
from stages import STAGES
from tests.conftest import synthetic_door_demos, write_demo_pickle
from tests.helpers import demo_config

pytestmark = pytest.mark.gl

TINY_STATE = {"policy.obs_mode": "state", "dapg.iterations": "2", "dapg.trajectories": "4",
              "env.horizon": "20", "dapg.eval_episodes": "1", "dapg.envs": "4"}


def config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    return demo_config(demos, TINY_STATE, **extra)


def test_diverging_dapg_stops_with_the_iteration_and_cause(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = Runner(config(tiny_door_demos, **{"dapg.step_size": "1e30"}), STAGES, tmp_path,
                    log=lambda m: None)
    with pytest.raises(NonFiniteError, match=r"DAPG iteration 0: .*step_size=1e\+30.* too large"):
        runner.run("dapg")
    assert runner.result("dapg") is None and not (runner.out_dir("dapg") / MANIFEST).exists()
    assert not (runner.out_dir("dapg") / "checkpoint.pt").exists()
    assert runner.result("bc") is not None  # the good upstream output stays done


def test_a_non_finite_iteration_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    from pipeline.rl.policy import GaussianMLPPolicy, MLPBaseline
    from pipeline.rl.sampler import VectorSampler
    from pipeline.rl.trainer import train_dapg

    ckpt = tmp_path / "checkpoint.pt"
    seen: dict[str, str] = {}

    def poison_iteration_1(iteration: int, rollouts: list[dict[str, np.ndarray]]) -> None:
        if iteration == 1:  # as if the simulator blew up: iteration 0's checkpoint is on disk
            seen["sha"] = hashlib.sha256(ckpt.read_bytes()).hexdigest()
            rollouts[2]["rewards"][5] = np.nan

    with VectorSampler("door", n_envs=2) as sampler, \
            pytest.raises(NonFiniteError, match=r"DAPG iteration 1: .*stoc_pol_mean"):
        train_dapg(GaussianMLPPolicy(39, 28, hidden=(16,)), MLPBaseline(39, hidden=(16,)), sampler,
                   DAPGConfig(iterations=3, trajectories=4), tmp_path, "door",
                   eval_episodes=0, on_rollouts=poison_iteration_1, log=None, horizon=10)
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == seen["sha"]
    state = torch.load(ckpt, weights_only=False)
    assert state["iteration"] == 1 and len(state["rows"]) == 1
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 2  # header + iteration 0


def test_dapg_refuses_a_bc_checkpoint_with_nan_parameters(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = Runner(config(tiny_door_demos), STAGES, tmp_path, log=lambda m: None)
    bc = runner.run("bc")
    checkpoint = bc.out_dir / bc.summary["checkpoint"]
    state = load_checkpoint(checkpoint)  # as if bc itself had saved NaN: its checksum holds
    state["policy"]["log_std"][3] = float("nan")
    save_checkpoint(checkpoint, state)
    with pytest.raises(NonFiniteError, match=r"policy\.pt: policy parameters log_std are NaN"):
        runner.run("dapg")
    assert runner.result("dapg") is None


def test_bc_on_overflowing_demos_writes_no_checkpoint(tmp_path: Path) -> None:
    demos = synthetic_door_demos()
    for d in demos:  # finite, so the demos pass validation, but squared errors overflow float32
        d["actions"] = d["actions"] * 1e25
    path = tmp_path / "door-v0_demos.pickle"
    sha = write_demo_pickle(path, demos)
    runner = Runner(config((path, sha)), STAGES, tmp_path / "data", log=lambda m: None)
    with pytest.raises(NonFiniteError, match=r"BC losses per epoch .* not all finite"):
        runner.run("bc")
    assert runner.result("bc") is None and not (runner.out_dir("bc") / "policy.pt").exists()


def test_non_finite_returns_are_refused() -> None:
    from pipeline.rl.rollouts import require_finite_returns, summarize

    def rollout(reward: float) -> dict[str, np.ndarray]:
        return {"rewards": np.array([1.0, reward]), "success": np.zeros(2, dtype=bool)}

    require_finite_returns(summarize([rollout(1.0), rollout(2.0)], "door"), "eval")
    with pytest.raises(NonFiniteError, match=r"eval: the returns of episodes \[1\] of 2"):
        require_finite_returns(summarize([rollout(1.0), rollout(np.inf)], "door"), "eval")
