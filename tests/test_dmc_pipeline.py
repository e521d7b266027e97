"""DeepMind Control through the pipeline's stages: one place answers for both task families, the
settings a family lacks are refused, the random policy is uniform and seeded, the family-dependent
defaults leave Adroit keys as they were, and a tiny cartpole run (random-policy rollouts ->
encode -> NPG from the state and from frozen features -> evaluate) runs every stage once and is
a cache hit the second time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import TASKS, PipelineConfig
from pipeline.envs.families import TASK_FACTS, task_facts
from pipeline.errors import ConfigError
from pipeline.runner import Runner, StageResult
from pipeline.store.episodes import EpisodeReader
from stages import STAGES

TASK = "cartpole-swingup"
HORIZON = 8
TINY = {"env.task": TASK, "dapg.use_demos": "false", "env.horizon": str(HORIZON),
        "dapg.iterations": "2", "dapg.trajectories": "4", "dapg.envs": "2",
        "dapg.eval_episodes": "2", "evaluate.episodes": "2", "evaluate.video_episodes": "0",
        "env.width": "32", "env.height": "32", "rollouts.episodes": "2",
        "rollouts.envs": "2", "rollouts.workers": "1", "encode.encoder": "resnet10t",
        "encode.weights": "random", "encode.resize": "32", "encode.crop": "32",
        "encode.workers": "1", "encode.batch_size": "16"}
SEED = 2 * 10**7  # rollouts.seed's default


def config(**extra: str) -> PipelineConfig:
    return PipelineConfig().with_overrides({**TINY, **extra})


def keys(cfg: PipelineConfig, tmp_path: Path) -> dict[str, str]:
    runner = Runner(cfg, STAGES, tmp_path)
    # The probe defines state targets for the Adroit tasks only (pipeline/encoders/probe.py); RAD runs
    # DeepMind Control only (stages/rad.py).
    family_only = {"probe"} if not task_facts(cfg.task).has_demos else {"rad"}
    return {s: runner.key(s) for s in STAGES if s not in family_only}


def test_one_place_answers_for_both_families() -> None:
    from pipeline.rl.rollouts import episode_success
    from pipeline.study.curves import ADROIT_RETURN, RETURN, SUCCESS, companion_metric, metric_for

    assert tuple(TASK_FACTS) == TASKS  # the CLI's choices are the tasks the facts know
    door, cartpole = task_facts("door"), task_facts(TASK)
    assert (door.family, door.obs_dim, door.act_dim, door.proprio_dim) == ("adroit", 39, 28, 24)
    assert door.default_cameras == ("top",) and door.default_horizon == 200 and door.has_demos
    assert task_facts("pen").default_horizon == 100  # mj_envs' pen-v0, RRL's and hand_dapg's
    assert (cartpole.family, cartpole.obs_dim, cartpole.act_dim, cartpole.proprio_dim) == ("dmc", 5, 1, 2)
    assert cartpole.default_cameras == ("fixed",) and cartpole.default_horizon == 1000 // 8
    assert cartpole.rewards == ("dense", "sparse") and task_facts("walker-walk").rewards == ("dense",)
    always = {"success": np.ones(200, dtype=bool)}
    assert episode_success(always, "door") and not episode_success(always, TASK)
    assert metric_for("door") is SUCCESS and metric_for(TASK) is RETURN
    assert companion_metric("door") is ADROIT_RETURN and companion_metric(TASK) is None


def test_family_defaults_leave_adroit_keys_and_resolve_for_dmc(tmp_path: Path) -> None:
    """Unset horizon, SOURCE=auto and POLICY=auto key as what they stand for: Adroit's 200 steps,
    demos and dapg (old keys), cartpole's 125 steps, random rollouts."""
    base = {"env.task": "hammer", "encode.weights": "random"}
    adroit = keys(PipelineConfig().with_overrides(base), tmp_path)
    explicit = keys(PipelineConfig().with_overrides({
        **base, "env.horizon": "200", "encode.source": "demos", "rollouts.policy": "dapg"}), tmp_path)
    assert adroit == explicit
    assert keys(config(**{"env.horizon": ""}), tmp_path) == keys(config(**{"env.horizon": "125"}), tmp_path)
    dmc = Runner(config(), STAGES, tmp_path)
    assert dmc.upstream_of("encode") == ("rollouts",) and dmc.upstream_of("rollouts") == ()
    assert dmc.inputs("rollouts")["policy"]["random"] and dmc.inputs("encode")["source"] == "rollouts"
    state = Runner(config(**{"policy.obs_mode": "state"}), STAGES, tmp_path)
    assert state.upstream_of("bc") == ()  # NPG from the state needs only the width


@pytest.mark.parametrize(("extra", "stage", "match"), [
    ({"evaluate.distractors": "0,1"}, "evaluate", "Adroit tasks only"),
    ({"rollouts.distractors": "2"}, "rollouts", "Adroit tasks only"),
    ({"env.distractor_level": "1"}, "encode", "Adroit tasks only"),
    ({"env.task": "finger-spin", "env.reward": "sparse"}, "dapg", "offers dense"),
    ({"encode.source": "demos"}, "encode", "has no demonstrations"),
    ({"rollouts.policy": "dapg"}, "rollouts", "made from its own rollouts"),
])
def test_settings_a_family_lacks_are_refused_before_any_work(
        extra: dict[str, str], stage: str, match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        Runner(config(**extra), STAGES, tmp_path).key(stage)
    assert "Fix:" in str(err.value)
    assert Runner(config(**{"env.reward": "sparse"}), STAGES, tmp_path).key("dapg")  # cartpole has it


def test_asking_a_dmc_task_for_demos_says_so(tmp_path: Path) -> None:
    from pipeline.envs.distractors import DistractorSpec
    from pipeline.rl.env_backends import task_env

    for cfg, stage in ((config(), "demos"),
                       (config(**{"policy.obs_mode": "state", "dapg.use_demos": "true"}), "bc")):
        with pytest.raises(ConfigError, match=f"{TASK} has no demonstrations.*Fix: .*use_demos=false"):
            Runner(cfg, STAGES, tmp_path, log=lambda m: None).run(stage)
    assert not list(tmp_path.glob("*/*/manifest.json"))
    with pytest.raises(ConfigError, match="Adroit tasks only"):
        task_env(TASK, distractors=DistractorSpec(1, 0))


def test_status_lists_every_stage_and_says_which_do_not_apply(tmp_path: Path) -> None:
    rows = {st.name: st for st in Runner(config(), STAGES, tmp_path).status()}
    assert set(rows) == set(STAGES)
    assert rows["probe"].state == "n/a" and "Adroit tasks" in rows["probe"].reason
    for name in ("demos", "render", "vae"):  # they replay demos; DMC has none
        assert rows[name].state == "n/a" and "no demonstrations" in rows[name].reason
        assert len(rows[name].key) == 64  # still computed, for the stages below
    assert rows["encode"].state == "missing"
    assert rows["dapg"].state == "missing" and len(rows["dapg"].key) == 64
    with pytest.raises(ConfigError, match=r"probe: no state targets.*Fix:"):
        Runner(config(), STAGES, tmp_path, log=lambda m: None).run("probe")


def test_uniform_random_policy_is_uniform_over_the_box_and_needs_noise() -> None:
    from pipeline.rl.random_policy import UniformRandomPolicy

    policy = UniformRandomPolicy(5, 2)
    actions = policy.act(np.zeros((20_000, 5)), np.random.default_rng(0).standard_normal((20_000, 2)))
    assert actions.min() >= -1 and actions.max() <= 1 and abs(actions.mean()) < 0.02
    counts, _ = np.histogram(actions, bins=10, range=(-1, 1))
    assert np.all(np.abs(counts - 4000) < 250), counts  # 40,000 draws in 10 equal bins
    with pytest.raises(ConfigError, match="deterministic=False"):
        policy.act(np.zeros((1, 5)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, StageResult]]:
    """Random rollouts -> encode -> NPG from features (+ proprio) and from the state -> evaluate."""
    data = tmp_path_factory.mktemp("dmc")
    vision = Runner(config(**{"evaluate.video_episodes": "1"}), STAGES, data, log=lambda m: None)
    state = Runner(config(**{"policy.obs_mode": "state"}), STAGES, data, log=lambda m: None)
    results = {"vision": vision.run("evaluate"), "state": state.run("evaluate")}
    results.update({f"{name}:{s}": r.result(s) for name, r in (("vision", vision), ("state", state))
                    for s in ("rollouts", "encode", "bc", "dapg") if r.result(s) is not None})
    return data, results  # type: ignore[return-value]


@pytest.mark.gl
def test_random_rollouts_are_encoded_and_their_actions_follow_the_seeds(tiny_run) -> None:  # type: ignore[no-untyped-def]
    from pipeline.rl.random_policy import UniformRandomPolicy
    from pipeline.store.features import open_features

    data, results = tiny_run
    rollouts, encode = results["vision:rollouts"], results["vision:encode"]
    assert rollouts.manifest["upstream"] == {} and encode.manifest["upstream"] == {"rollouts": rollouts.key}
    assert not (data / "demos").exists() and not (data / "render").exists()
    policy = UniformRandomPolicy(5, 1)
    with EpisodeReader(rollouts.file("episodes_file")) as reader:
        assert reader.env_args["type"] == "dmc" and reader.cameras == ["fixed"]
        for i, episode in enumerate(reader.groups):
            expected = policy.act(np.zeros((HORIZON, 5)), np.random.default_rng(SEED + i)
                                  .standard_normal((HORIZON, 1)))
            np.testing.assert_array_equal(episode["actions"][:], expected.astype(episode["actions"].dtype))
            assert episode["obs/fixed_image"].shape == (HORIZON, 32, 32, 3)
            assert episode["obs/proprio"].shape == (HORIZON, 2)
            assert episode["obs/state"].shape == (HORIZON, 5)
            assert reader.attrs(i)["seed"] == SEED + i
    store = open_features(str(data / "features.zarr"), encode.key)
    assert store.read("fixed").shape == (2 * HORIZON, 512) and store.attrs["episodes_stage"] == "rollouts"


@pytest.mark.gl
def test_npg_from_features_and_from_state_then_evaluate(tiny_run) -> None:  # type: ignore[no-untyped-def]
    _, results = tiny_run
    bc_vision, bc_state = results["vision:bc"].summary, results["state:bc"].summary
    assert bc_vision["obs_dim"] == 512 + 2 and bc_vision["input_normalization"].startswith("feature store")
    assert bc_state["obs_dim"] == 5 and bc_state["input_normalization"] == "identity"
    assert results["state:bc"].manifest["upstream"] == {}
    for name in ("vision", "state"):
        dapg = results[f"{name}:dapg"].summary
        assert dapg["iterations"] == 2 and dapg["samples"] == 2 * 4 * HORIZON and dapg["horizon"] == HORIZON
        assert np.isfinite(dapg["final_return"]) and dapg["final_success_rate"] == 0
        ev = results[name].summary
        assert ev["episodes"] == 2 and ev["success_rate"] == 0 and np.isfinite(ev["mean_return"])
        assert "no success signal" in STAGES["evaluate"].describe(results[name])
    assert (results["vision"].out_dir / results["vision"].summary["video"]).stat().st_size > 1000
    assert "RANDOM" in results["vision"].summary["weights"]


@pytest.mark.gl
def test_a_rerun_is_a_cache_hit(tiny_run) -> None:  # type: ignore[no-untyped-def]
    data, results = tiny_run
    for name, extra in (("vision", {"evaluate.video_episodes": "1"}), ("state", {"policy.obs_mode": "state"})):
        logs: list[Any] = []
        again = Runner(config(**extra), STAGES, data, log=logs.append).run("evaluate")
        assert again.cache_hit and again.key == results[name].key
        assert not [m for m in logs if "running" in m], logs
    for manifest in data.rglob("manifest.json"):  # a data folder can be moved
        # (encode's summary holds its verify report, which names the store's location)
        assert manifest.parts[-3] == "encode" or str(data) not in manifest.read_text(), manifest
        assert json.loads(manifest.read_text())["inputs"].get("task", TASK) == TASK


def test_npg_with_no_evaluation_episodes_runs_and_says_so(tmp_path: Path) -> None:
    cfg = config(**{"policy.obs_mode": "state", "dapg.eval_episodes": "0"})
    result = Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("dapg")
    assert result.summary["bc_start"]["episodes"] == 0 and result.summary["iterations"] == 2
    assert "start not evaluated (dapg.eval_episodes=0)" in STAGES["dapg"].describe(result)
