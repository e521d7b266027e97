"""The linear probe: ridge against lstsq, demo-grouped splits, target layout against the simulator,
and the probe stage on a tiny real pipeline (render -> encode -> probe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import PipelineConfig, ProbeConfig
from pipeline.encoders.probe import (
    TARGETS,
    RidgePath,
    load_probe_data,
    probe,
    probe_features,
    r2_scores,
    row_demos,
    split_demos,
)
from pipeline.errors import ConfigError, StoreError
from pipeline.runner import Runner, StageResult
from stages import STAGES
from tests.conftest import synthetic_door_demos, write_demo_pickle
from tests.helpers import demo_config, load_bench


def _demo_ends(n_demos: int, rng: np.random.Generator) -> np.ndarray:
    return np.cumsum(rng.integers(20, 40, n_demos))


def test_ridge_matches_lstsq_as_alpha_goes_to_zero() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 12)) * rng.uniform(0.1, 50, 12) + rng.normal(size=12) * 10
    y = x @ rng.normal(size=(12, 3)) + 5.0 + rng.normal(size=(200, 3))
    design = np.hstack([x, np.ones((200, 1))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    x_new = rng.normal(size=(50, 12)) * 20
    expected = np.hstack([x_new, np.ones((50, 1))]) @ coef
    path = RidgePath(x, y)
    np.testing.assert_allclose(path.predict(x_new, 1e-10), expected, rtol=1e-7, atol=1e-7)
    # A large alpha must shrink: predictions move towards the training mean.
    shrunk = path.predict(x_new, 1e6)
    assert np.abs(shrunk - y.mean(axis=0)).max() < 0.1 * np.abs(expected - y.mean(axis=0)).max()


def test_split_never_shares_a_demo_between_train_and_test() -> None:
    rng = np.random.default_rng(2)
    ends = _demo_ends(25, rng)
    split = split_demos(25, 0.2, 5, seed=3)
    assert len(split.test) == 5 and len(split.folds) == 5
    assert set(split.test).isdisjoint(split.train)
    assert sorted(split.test + split.train) == list(range(25))
    folds = [set(f) for f in split.folds]
    assert all(a.isdisjoint(b) for i, a in enumerate(folds) for b in folds[i + 1:])
    rows = row_demos(ends)
    assert len(rows) == ends[-1] and np.array_equal(np.bincount(rows), np.diff(ends, prepend=0))
    test_rows, train_rows = np.isin(rows, split.test), np.isin(rows, split.train)
    assert not (test_rows & train_rows).any() and (test_rows | train_rows).all()
    assert set(rows[test_rows]).isdisjoint(rows[train_rows])
    for fold in split.folds:  # an inner fold's held-out demos are whole too
        held = np.isin(rows, fold)
        assert set(rows[held]).isdisjoint(rows[train_rows & ~held])
    assert split_demos(25, 0.2, 5, seed=3) == split
    assert split_demos(25, 0.2, 5, seed=4).test != split.test


def test_split_refuses_too_few_demos() -> None:
    with pytest.raises(ConfigError, match=r"at least 2 training demos.*Fix:"):
        split_demos(2, 0.2, 5, seed=0)
    assert len(split_demos(3, 0.2, 5, seed=0).folds) == 2  # folds capped by the demos left


def test_random_features_score_near_or_below_zero() -> None:
    rng = np.random.default_rng(4)
    ends = _demo_ends(20, rng)
    n = int(ends[-1])
    y = np.cumsum(rng.normal(size=(n, 2)), axis=0)  # smooth, like a state trajectory
    split = split_demos(20, 0.25, 4, seed=0)
    out = probe(rng.normal(size=(n, 64)), y, [("t", [0, 1])], row_demos(ends), split,
                ProbeConfig().alphas)
    assert out["t"]["r2"] is not None and out["t"]["r2"] < 0.05
    assert out["t"]["alpha"] >= 100  # nothing to fit: CV picks strong shrinkage


def test_probe_recovers_a_planted_linear_signal() -> None:
    rng = np.random.default_rng(5)
    ends = _demo_ends(15, rng)
    n = int(ends[-1])
    state = rng.normal(size=(n, 39))
    x = np.hstack([state @ rng.normal(size=(39, 39)), rng.normal(size=(n, 20)), np.ones((n, 3))])
    out = probe_features(x, state, ends, "door", ProbeConfig())
    assert out["input_dim"] == 62 and out["constant_dims"] == 3
    for t in out["targets"]:
        assert t["features"]["r2"] > 0.99, t["name"]
    # Door observations here are independent noise, so the rest of the state explains nothing.
    assert out["targets"][0]["name"] == "hinge" and out["targets"][0]["state_ceiling"]["r2"] < 0.05


def test_one_trajectory_rendered_at_several_levels_stays_on_one_side_of_the_split() -> None:
    from pipeline.encoders.probe import trajectory_groups

    rng = np.random.default_rng(3)
    seeds = [100 + i for i in range(10)] * 4  # rollouts: 10 seeds, each at levels 0-3
    ends = _demo_ends(40, rng)
    state = rng.normal(size=(int(ends[-1]), 39))
    groups = trajectory_groups(seeds)
    assert groups.tolist() == list(range(10)) * 4
    assert trajectory_groups([None, 5, None, 5]).tolist() == [0, 1, 2, 1]
    out = probe_features(state @ rng.normal(size=(39, 16)), state, ends, "door", ProbeConfig(),
                         groups)
    test_seeds = {seeds[e] for e in out["test_demos"]}
    train_seeds = {seeds[e] for fold in out["folds"] for e in fold}
    assert len(out["test_demos"]) == 4 * len(test_seeds) and not test_seeds & train_seeds
    # Every episode its own trajectory (rendered demos): the split is the one it always was.
    alone = probe_features(state, state, ends, "door", ProbeConfig())
    assert alone["test_demos"] == list(split_demos(40, 0.2, 5, 0).test)


def test_distractor_probe_scores_clean_fits_on_moved_features() -> None:
    """bench/distractor_probe.py: out-of-fold probes fit on clean rows read a planted signal from
    clean rows, not from rows whose features a 'distractor' moved; the shift measures the move."""
    bench = load_bench("distractor_probe")
    rng = np.random.default_rng(7)
    ends = _demo_ends(10, rng)
    demo = row_demos(ends)
    y = rng.normal(size=(int(ends[-1]), 3))
    clean = np.hstack([y @ rng.normal(size=(3, 8)), rng.normal(size=(len(y), 4))])
    moved = clean + rng.normal(scale=3.0, size=(1, clean.shape[1])) * rng.normal(size=(len(y), 1))
    pred = bench.out_of_fold(clean, {"clean": clean, "moved": moved}, y, demo, folds=5, seed=0)
    groups = [("t", [0, 1, 2])]
    assert r2_scores(y, bench.at_best_alpha(pred["clean"], y, groups)).min() > 0.99
    assert r2_scores(y, pred["moved"][0]).mean() < 0.5
    scale = bench.spread(clean, rng)
    assert bench.shift(clean, clean, np.arange(len(y)), scale) == 0.0
    assert bench.shift(clean, moved, np.arange(len(y)), scale) > 0.5


def test_r2_is_none_for_a_constant_dim() -> None:
    y = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    r2 = r2_scores(y, y + 0.1)
    assert np.isnan(r2[0]) and r2[1] == pytest.approx(1 - 0.03 / 2)


def _sim_targets(env: Any) -> dict[str, np.ndarray]:
    """Each probe target computed from named simulator quantities, not from the observation."""
    from gymnasium_robotics.utils.rotations import quat2euler

    d, raw = env.data, env.env
    site, body = (lambda n: np.array(d.site(n).xpos)), (lambda n: np.array(d.body(n).xpos))
    if env.task == "door":
        return {"hinge": d.joint("door_hinge").qpos, "latch": d.joint("latch").qpos,
                "handle": site("S_handle"), "palm": site("S_grasp")}
    if env.task == "hammer":
        return {"hammer_pos": body("Object"), "hammer_rot": quat2euler(d.body("Object").xquat),
                "nail_pos": site("S_target"), "nail_depth": d.joint("nail_dir").qpos,
                "palm": site("S_grasp")}
    if env.task == "pen":
        return {"pen_pos": body("Object"),
                "pen_dir": (site("object_top") - site("object_bottom")) / raw.pen_length,
                "goal_dir": (site("target_top") - site("target_bottom")) / raw.tar_length}
    return {"palm_to_ball": site("S_grasp") - body("Object"),
            "palm_to_goal": site("S_grasp") - site("target"),
            "ball_to_goal": body("Object") - site("target")}


@pytest.mark.parametrize("task", sorted(TARGETS))
def test_targets_index_the_quantities_they_name(task: str) -> None:
    from pipeline.envs.adroit import AdroitEnv

    env = AdroitEnv(task, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(8):  # move away from the reset pose, so zeros cannot match by chance
        env.step(rng.uniform(-1, 1, env.spec.act_dim))
    obs, expected = env.observation(), _sim_targets(env)
    env.close()
    assert [t.name for t in TARGETS[task]] == list(expected)
    for t in TARGETS[task]:
        np.testing.assert_allclose(obs[list(t.dims)], np.ravel(expected[t.name]), atol=1e-9,
                                   err_msg=f"{task} {t.name}")


# --- the stage on a tiny real pipeline ---------------------------------------------------------

TINY = {"env.width": "48", "env.height": "48", "render.workers": "1",
        "encode.encoder": "resnet10t", "encode.weights": "random", "encode.resize": "48",
        "encode.crop": "40", "encode.workers": "1", "probe.test_fraction": "0.3"}
# The state ceiling can only find handle = palm - (palm - handle) from training data in which
# that relation is identifiable: more rows than the 36 inputs, and the handle (fixed within a
# demo) in general position over at least 4 training demos. 7 demos: 2 held out, 5 to train.
DEMOS, STEPS = 7, 24


@pytest.fixture(scope="module")
def five_demos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("demos") / "door-v0_demos.pickle"
    return path, write_demo_pickle(path, synthetic_door_demos(n=DEMOS, steps=STEPS, seed=1))


def _config(demos: tuple[Path, str], **extra: str) -> PipelineConfig:
    return demo_config(demos, TINY, **extra)


def _run(cfg: PipelineConfig, data: Path, stage: str = "probe") -> StageResult:
    return Runner(cfg, STAGES, data, log=lambda m: None).run(stage)


@pytest.fixture(scope="module")
def probed(five_demos: tuple[Path, str],
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StageResult]:
    data = tmp_path_factory.mktemp("data")
    return data, _run(_config(five_demos), data)


@pytest.mark.gl
def test_stage_writes_scores_and_flags_random_weights(probed: tuple[Path, StageResult]) -> None:
    _, result = probed
    s = result.summary
    assert json.loads((result.out_dir / "probe.json").read_text()) == s
    assert s["encoder"] == "resnet10t" and s["random_weights"] is True
    assert s["rows"] == DEMOS * STEPS and s["input_dim"] == s["feature_dim"] == 512 and s["cameras"] == ["top"]
    assert len(s["test_demos"]) == 2 and not set(s["test_demos"]) & {d for f in s["folds"] for d in f}
    assert [t["name"] for t in s["targets"]] == ["hinge", "latch", "handle", "palm"]
    assert s["load_seconds"] + s["probe_seconds"] < 30
    text = STAGES["probe"].describe(result)
    assert "RANDOM" in text and "handle" in text and "probe.json" in text


@pytest.mark.gl
def test_state_ceiling_is_near_one_for_linear_functions_of_the_state(
        probed: tuple[Path, StageResult]) -> None:
    targets = {t["name"]: t for t in probed[1].summary["targets"]}
    # handle = palm - (palm - handle) and palm = handle + (palm - handle): both are in the state.
    for name in ("handle", "palm"):
        assert targets[name]["state_ceiling"]["r2"] > 0.999, targets[name]
    for t in targets.values():
        r2 = t["features"]["r2"]
        assert r2 is None or np.isfinite(r2)


@pytest.mark.gl
def test_second_run_is_a_cache_hit_and_probe_settings_key_only_the_probe(
        five_demos: tuple[Path, str], probed: tuple[Path, StageResult]) -> None:
    data, first = probed
    again = _run(_config(five_demos), data)
    assert again.cache_hit and again.key == first.key
    other = Runner(_config(five_demos, **{"probe.folds": "2"}), STAGES, data)
    assert other.key("probe") != first.key
    assert other.key("encode") == first.manifest["upstream"]["encode"]
    # BLAS threads change the speed, not the numbers: not in the key.
    assert Runner(_config(five_demos, **{"probe.threads": "2"}), STAGES, data).key("probe") == first.key


@pytest.mark.gl
def test_store_and_episode_file_of_other_rows_are_refused(
        five_demos: tuple[Path, str], probed: tuple[Path, StageResult]) -> None:
    data, result = probed
    shorter = _run(_config(five_demos, **{"render.max_steps": str(STEPS - 2)}), data, "render")
    store = str(data / "features.zarr")
    with pytest.raises(StoreError, match=r"episode ends .* do not match.*Fix:"):
        load_probe_data(store, result.manifest["upstream"]["encode"],
                        str(shorter.out_dir / "episodes.hdf5"), "door", include_proprio=False)
    with_proprio = load_probe_data(store, result.manifest["upstream"]["encode"],
                                   str(data / "render" / result.manifest["upstream"]["render"][:12]
                                       / "episodes.hdf5"), "door", include_proprio=True)
    assert with_proprio.features.shape == (DEMOS * STEPS, 512 + 24)


def test_probe_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"probe\.alphas"):
        ProbeConfig(alphas=())
    with pytest.raises(ConfigError, match=r"probe.test_fraction.*at most 0.5"):
        PipelineConfig().with_overrides({"probe.test_fraction": "0.9"})
    assert PipelineConfig().with_overrides({"probe.alphas": "0.5,2"}).probe.alphas == (0.5, 2.0)


def test_a_vae_trained_on_a_held_out_demo_is_refused(tmp_path: Path) -> None:
    from stages.probe import _refuse_demos_the_encoder_trained_on

    weights = tmp_path / "vae" / "abc" / "encoder.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    (weights.parent / "manifest.json").write_text(json.dumps(
        {"key": "abc" + "0" * 61, "summary": {"heldout_episodes": [4, 10, 11, 19, 24]}}))
    cfg = PipelineConfig().with_overrides({"encode.encoder": "vae", "encode.weights": str(weights)})
    _refuse_demos_the_encoder_trained_on(cfg, [4, 10, 19])  # all held out by the VAE too
    with pytest.raises(ConfigError, match=r"held-out demos \[1, 7\].*Fix: set probe.seed"):
        _refuse_demos_the_encoder_trained_on(cfg, [1, 4, 7])
