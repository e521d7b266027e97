"""Content keys stay what they were when settings moved between config sections (issue 19).

The keys below were computed before the environment settings moved to their own `env` section
(`env.task`, `env.reward`, `env.horizon`, `env.cameras/width/height/shadows/distractor_*`)
and `dapg.device` merged into `encode.device`. A stage computes its key from the values it depends
on under stable names, so finished runs, the README's figures and resumable long runs stay cache
hits. A change here must come with a stage version bump and a reason.

Two deliberate changes since (issue 20, the representation zoo), each named where it applies:
pretrained weights are keyed by their file's sha256, so a stage that depends on them has no key
until the file is there (offline with an empty cache: a WeightsError naming the fix), and
resnet10t's input is timm's own config for its weights (176 px, bicubic), a different tensor.

One deliberate change of default since (`dapg.horizon_value`, from "bootstrap" to mjrl's "zero"):
runs made before are keyed as "bootstrap", so these keys are computed with it set, and the new
default must give the policy stages keys of their own.
"""

from __future__ import annotations

import pytest

from pipeline.config import MOVED, PipelineConfig
from pipeline.errors import ConfigError, WeightsError
from pipeline.runner import Runner
from stages import STAGES

CASES: dict[str, dict[str, str]] = {
 "defaults": {},
 "random_resnet34_64px_bf16": {"env.width": "64", "env.height": "64", "encode.weights": "random", "encode.precision": "bf16", "encode.resize": "64", "encode.crop": "64", "dapg.iterations": "300", "dapg.trajectories": "20", "dapg.eval_episodes": "5"},
 "state_cell": {"env.width": "64", "env.height": "64", "policy.obs_mode": "state", "dapg.iterations": "300", "dapg.trajectories": "20", "dapg.eval_episodes": "5"},
 "dmc_state_npg": {"env.task": "cartpole-swingup", "policy.obs_mode": "state", "dapg.use_demos": "false", "dapg.iterations": "50", "dapg.trajectories": "40"},
 "dmc_vision": {"env.task": "cartpole-swingup", "encode.encoder": "resnet18", "encode.weights": "random", "env.width": "84", "env.height": "84", "dapg.use_demos": "false"},
 "sparse_horizon_distract_shadows": {"env.reward": "sparse", "env.horizon": "150", "env.distractor_level": "2", "env.distractor_seed": "5", "env.cameras": "fixed", "env.shadows": "true", "evaluate.distractors": "0,1,2,3"},
 "rollouts_random_levels": {"rollouts.policy": "random", "rollouts.distractors": "0,1,2,3", "rollouts.episodes": "10", "encode.source": "rollouts", "policy.obs_mode": "state"},
 "hammer_open_loop": {"env.task": "hammer", "render.replay": "open_loop", "encode.encoder": "resnet18", "policy.hidden": "64,64", "render.max_demos": "3", "render.max_steps": "50"},
 "probe_proprio": {"probe.include_proprio": "true", "encode.encoder": "resnet10t", "encode.weights": "random"},
}

LEGACY_HORIZON_VALUE = "bootstrap"
PRETRAINED = "pretrained"  # the key holds the pretrained file's sha256 (issue 20): none offline

# stage -> key prefix (16 hex digits: enough to fail on any change), computed before the move.
KEYS = {
    "defaults": {
        "bc": PRETRAINED, "dapg": PRETRAINED, "demos": "2be3d3230e19d44a",
        "encode": PRETRAINED, "evaluate": PRETRAINED, "probe": PRETRAINED,
        "render": "3053436b74f612ad", "rollouts": PRETRAINED, "vae": "e4fdc541c02cb20d",
    },
    "dmc_state_npg": {
        "bc": "414cd2bed6520d78", "dapg": "71182ad2ad4292d4", "demos": "dabbb2944152ebcc",
        "encode": PRETRAINED, "evaluate": "59be3a6c116bafa1", "probe": None,
        "render": "74aa67587eed2622", "rollouts": "13657f90e8da26a9", "vae": "e6eb3588749dea71",
    },
    "dmc_vision": {
        "bc": "261737548a4ee953", "dapg": "3b45c932ead189ab", "demos": "dabbb2944152ebcc",
        "encode": "8b7f4ac10223d199", "evaluate": "f02975fcbdea6c4f", "probe": None,
        "render": "05e89c820acacb5d", "rollouts": "829a21a36c0e935c", "vae": "95cfe7659548a3a7",
    },
    "hammer_open_loop": {
        "bc": PRETRAINED, "dapg": PRETRAINED, "demos": "08d4df808b259b71",
        "encode": PRETRAINED, "evaluate": PRETRAINED, "probe": PRETRAINED,
        "render": "a1d3d7f20c1b32d7", "rollouts": PRETRAINED, "vae": "35cb0ebf1f5bbc10",
    },
    "probe_proprio": {  # resnet10t: timm's c3_in1k input since issue 20 (was 256/224 bilinear)
        "bc": "b7043b31bdee42d1", "dapg": "144404ce6c603243", "demos": "2be3d3230e19d44a",
        "encode": "53718c37c76a420b", "evaluate": "7d8fcd0bebfe0b18", "probe": "8b8158826d99feac",
        "render": "3053436b74f612ad", "rollouts": "6b827fed3ff3a364", "vae": "e4fdc541c02cb20d",
    },
    "random_resnet34_64px_bf16": {
        "bc": "265485edc3636d56", "dapg": "2a115f9503471ccb", "demos": "2be3d3230e19d44a",
        "encode": "b5e4cfc34f59f229", "evaluate": "c010020e354edf9f", "probe": "d23fded0489c4e53",
        "render": "e6b948d38164163f", "rollouts": "d1abafe73ae55345", "vae": "616b501924f639b3",
    },
    "rollouts_random_levels": {
        "bc": "cebc33eda5e369ab", "dapg": "49861580791d4190", "demos": "2be3d3230e19d44a",
        "encode": PRETRAINED, "evaluate": "34a7e6e94f838efb", "probe": PRETRAINED,
        "render": "3053436b74f612ad", "rollouts": "7803a48b931d8bb8", "vae": "e4fdc541c02cb20d",
    },
    "sparse_horizon_distract_shadows": {
        "bc": PRETRAINED, "dapg": PRETRAINED, "demos": "2be3d3230e19d44a",
        "encode": PRETRAINED, "evaluate": PRETRAINED, "probe": PRETRAINED,
        "render": "fb41be89a9fe8341", "rollouts": PRETRAINED, "vae": "477bfca723587668",
    },
    "state_cell": {
        "bc": "cebc33eda5e369ab", "dapg": "85166fc5f19ff680", "demos": "2be3d3230e19d44a",
        "encode": PRETRAINED, "evaluate": "a1423e4da6c730a3", "probe": PRETRAINED,
        "render": "e6b948d38164163f", "rollouts": "10742093c6523040", "vae": "616b501924f639b3",
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_keys_did_not_change_when_settings_moved(case: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # No pretrained file anywhere, and no network asked: the same answer on every machine.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    before = {"dapg.horizon_value": LEGACY_HORIZON_VALUE, **CASES[case]}
    runner = Runner(PipelineConfig().with_overrides(before), STAGES, tmp_path)
    for stage, expected in KEYS[case].items():
        if expected == PRETRAINED:
            with pytest.raises(WeightsError, match="Fix:"):
                runner.key(stage)
            continue
        if expected is None:  # the stage does not apply (e.g. the probe on DeepMind Control)
            with pytest.raises(ConfigError):
                runner.key(stage)
            continue
        assert runner.key(stage)[:16] == expected, f"{case}: the {stage} key changed"


def test_the_new_horizon_value_default_keys_only_what_dapg_computes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    case = CASES["state_cell"]
    legacy = Runner(PipelineConfig().with_overrides(
        {**case, "dapg.horizon_value": LEGACY_HORIZON_VALUE}), STAGES, tmp_path)
    default = Runner(PipelineConfig().with_overrides(case), STAGES, tmp_path)
    changed = {s for s in ("demos", "render", "bc", "dapg", "evaluate", "rollouts")
               if legacy.key(s) != default.key(s)}
    assert changed == {"dapg", "evaluate", "rollouts"}  # rollouts: POLICY=auto is dapg's


@pytest.mark.parametrize("old", list(MOVED))
def test_an_old_setting_name_is_refused_with_its_new_one(old: str) -> None:
    with pytest.raises(ConfigError, match=rf"setting {old} is now {MOVED[old]}.*Fix: write {MOVED[old]}="):
        PipelineConfig().with_overrides({old: "1"})


def test_only_pen_keys_its_early_end() -> None:
    from pipeline.envs.tasks import PEN_DROP_HEIGHT

    for stage in ("dapg", "evaluate", "rollouts"):
        pen = STAGES[stage].inputs(PipelineConfig().with_overrides({"env.task": "pen"}))
        door = STAGES[stage].inputs(PipelineConfig())
        assert pen["ends_when_pen_below"] == PEN_DROP_HEIGHT and "ends_when_pen_below" not in door
