"""Distractors in the render and evaluate stages and in the vision sampler: keys (old ones kept),
frames that change while physics does not, and per-level evaluation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pipeline.config import PipelineConfig
from pipeline.envs.distractors import DistractorSpec
from pipeline.envs.replay import demo_distractors
from pipeline.runner import Runner
from stages import STAGES
from tests.helpers import TINY_RL, TINY_VISION
from tests.helpers import tiny_config as config

pytestmark = pytest.mark.gl

# The default config's render key before distractors existed: level 0 must keep it.
DEFAULT_RENDER_KEY = "3053436b74f612ad393a57fe564d30f3110bf28d7fb1ed1ee708e39d2dae2db8"


def test_render_level_0_keeps_the_old_key_and_level_2_renders_other_frames(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert Runner(PipelineConfig(), STAGES, tmp_path).key("render") == DEFAULT_RENDER_KEY
    tiny = {"env.width": "32", "env.height": "32", "render.workers": "1",
            "render.max_demos": "2", "render.max_steps": "4"}
    plain = config(tiny_door_demos, **tiny)
    level0 = config(tiny_door_demos, **tiny, **{"env.distractor_seed": "5"})
    level2 = config(tiny_door_demos, **tiny, **{"env.distractor_level": "2"})
    keys = {name: Runner(c, STAGES, tmp_path).key("render")
            for name, c in (("plain", plain), ("level0", level0), ("level2", level2))}
    assert keys["level0"] == keys["plain"] != keys["level2"]
    assert Runner(level2, STAGES, tmp_path).inputs("render")["distractors"]["version"] >= 1
    results = [Runner(c, STAGES, tmp_path, log=lambda m: None).run("render") for c in (plain, level2)]
    assert results[1].summary["distractors"]["level"] == 2
    files = [h5py.File(r.out_dir / "episodes.hdf5", "r") for r in results]
    try:
        for demo in ("demo_0", "demo_1"):
            a, b = (f[f"data/{demo}"] for f in files)
            np.testing.assert_array_equal(a["states"][:], b["states"][:])  # the same replay
            assert np.abs(a["obs/top_image"][:].astype(int) - b["obs/top_image"][:]).mean() > 2
    finally:
        for f in files:
            f.close()
    # Demo i is its own scene: the render workers rebuild their env for each demo's spec.
    assert [demo_distractors(level2.env, i) for i in (0, 1)] == [DistractorSpec(2, 0),
                                                                     DistractorSpec(2, 1)]
    assert demo_distractors(level0.env, 1) is None


def test_vision_sampler_envs_render_the_scene_of_each_episode() -> None:
    from pipeline.encoders import create_encoder
    from pipeline.rl.distracted import env_factory
    from pipeline.rl.policy import GaussianMLPPolicy
    from pipeline.rl.vision import ObsSpec, VisionSampler

    encoder = create_encoder("resnet10t", "random", resize=32, crop=32)
    policy = GaussianMLPPolicy(512 + 24, 28, seed=0)
    runs = []
    for factory in (None, env_factory(3)):
        extra = {"env_factory": factory} if factory else {}
        with VisionSampler("door", encoder, ObsSpec("vision+proprio", ("top",)), n_envs=2,
                           workers=1, width=32, height=32, record=True, **extra) as sampler:
            runs.append(sampler.sample(policy, 2, 3, seed=7, deterministic=True))
    for clean, distracted in zip(*runs, strict=True):
        assert np.abs(clean["frames"]["top"].astype(int) - distracted["frames"]["top"]).mean() > 2
        np.testing.assert_array_equal(clean["states"][0], distracted["states"][0])  # same reset
        assert not np.allclose(clean["observations"], distracted["observations"])  # it sees them


def test_evaluate_reports_each_distractor_level(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    default = config(tiny_door_demos, **{"policy.obs_mode": "state", "evaluate.policy": "bc"})
    cfg = config(tiny_door_demos, **{"policy.obs_mode": "state", "evaluate.policy": "bc",
                                     "evaluate.distractors": "1,0"})
    assert "distractors" not in Runner(default, STAGES, tmp_path).inputs("evaluate")["evaluate"]
    assert Runner(cfg, STAGES, tmp_path).key("evaluate") != Runner(default, STAGES, tmp_path).key("evaluate")
    result = Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("evaluate")
    s = result.summary
    assert list(s["per_level"]) == ["1", "0"] and s["distractors"] == [1, 0]
    assert all(v["episodes"] == int(TINY_RL["evaluate.episodes"]) for v in s["per_level"].values())
    # A state policy never sees the frames: the same score at every level, said so.
    assert s["per_level"]["0"] == s["per_level"]["1"] and "state observations" in s["distractors_note"]
    assert s["success_rate"] == s["per_level"]["1"]["success_rate"]  # the first level on top
    text = STAGES["evaluate"].describe(result)
    assert "distractor level" in text and text.count("%") >= 3
    assert (result.out_dir / s["video"]).stat().st_size > 1000


@pytest.mark.slow
def test_vision_evaluate_under_distractors_end_to_end(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tiny_door_demos, **TINY_VISION, **{"evaluate.policy": "bc",
                                                   "evaluate.distractors": "0,1",
                                                   "evaluate.video_episodes": "0"})
    result = Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("evaluate")
    levels = result.summary["per_level"]
    assert list(levels) == ["0", "1"] and "distractors_note" not in result.summary
    # Random-weights features of other frames move a BC policy's actions, so the returns.
    assert levels["0"]["mean_return"] != levels["1"]["mean_return"]
    assert "RANDOM" in STAGES["evaluate"].describe(result)


def test_mixed_levels_render_demo_i_at_levels_i_mod_n(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """env.distractor_levels=0,2: demo 0 clean, demo 1 at level 2, demo 2 clean... in its own
    seeded scene; the mix is in the render key, and one level with a mix is refused."""
    from pipeline.errors import ConfigError

    mixed = PipelineConfig().with_overrides({"env.distractor_levels": "0,2",
                                             "env.distractor_seed": "7"})
    assert [demo_distractors(mixed.env, i) for i in range(3)] == [None, DistractorSpec(2, 8), None]
    plain = Runner(PipelineConfig(), STAGES, tmp_path).key("render")
    key = Runner(mixed, STAGES, tmp_path).key("render")
    assert key != plain
    assert Runner(mixed, STAGES, tmp_path).inputs("render")["distractors"]["levels"] == [0, 2]
    with pytest.raises(ConfigError, match=r"env\.distractor_levels"):
        PipelineConfig().with_overrides({"env.distractor_levels": "0,2",
                                         "env.distractor_level": "1"})
