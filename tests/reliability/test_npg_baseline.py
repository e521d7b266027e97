"""The no-demos baseline (NPG, dapg.use_demos=false) must not see the demos: its starting policy
is freshly initialised, not behaviour-cloned, and its input normalization is the identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import PipelineConfig
from pipeline.outputs import policy_file
from pipeline.rl.checkpoints import load_policy
from pipeline.rl.policy import GaussianMLPPolicy
from pipeline.runner import Runner
from stages import STAGES
from tests.helpers import demo_config, stand_in_pretrained


def _config(demos: tuple[Path, str], use_demos: bool) -> PipelineConfig:
    return demo_config(demos, {"policy.obs_mode": "state", "policy.hidden": "16,16",
                               "dapg.use_demos": str(use_demos)})


def test_npg_starts_from_a_fresh_policy_and_dapg_from_bc(tiny_door_demos: tuple[Path, str],
                                                         tmp_path: Path) -> None:
    npg = Runner(_config(tiny_door_demos, False), STAGES, tmp_path, log=lambda m: None)
    dapg = Runner(_config(tiny_door_demos, True), STAGES, tmp_path, log=lambda m: None)
    assert npg.key("bc") != dapg.key("bc")
    fresh = GaussianMLPPolicy(39, 28, hidden=(16, 16), seed=0).state_dict()
    start = load_policy(policy_file(npg.run("bc"))).state_dict()
    assert all(torch.equal(fresh[k], start[k]) for k in fresh)
    cloned = load_policy(policy_file(dapg.run("bc"))).state_dict()
    assert not all(torch.equal(fresh[k], cloned[k]) for k in fresh)


def test_dapg_keys_do_not_change_with_the_npg_option_present(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_pretrained(tmp_path, monkeypatch, ("resnet34",))  # RRL's defaults, offline
    base = Runner(PipelineConfig(), STAGES, "data")
    explicit = Runner(PipelineConfig().with_overrides({"dapg.use_demos": "true"}), STAGES, "data")
    assert base.key("bc") == explicit.key("bc")
    assert "clone" not in base.inputs("bc")
