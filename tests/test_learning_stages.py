"""The learning stages on tiny runs: vision sampler batching, encoder checks, observation modes,
state and vision pipelines end to end, DAPG resume through the stage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.rl.vision import ObsSpec, check_encoder_matches_store
from pipeline.runner import Runner
from pipeline.store.episodes import EpisodeReader
from stages import STAGES
from tests.helpers import TINY_VISION
from tests.helpers import tiny_config as config

pytestmark = pytest.mark.gl

RRL_COLUMNS = ["iteration", "time_sampling", "stoc_pol_mean", "stoc_pol_std", "stoc_pol_max",
               "stoc_pol_min", "alpha", "delta", "time_vpg", "time_npg", "kl_dist",
               "surr_improvement", "running_score", "success_rate", "num_samples", "time_VF",
               "VF_error_before", "VF_error_after", "eval_score"]


def test_obs_modes_assemble_the_documented_vectors() -> None:
    feats = {"top": np.ones((3, 4)), "fixed": 2 * np.ones((3, 4))}
    proprio = np.full((3, 24), 5.0)
    full = ObsSpec("vision+proprio", ("top", "fixed")).assemble(feats, proprio)
    assert full.shape == (3, 32) and (full[:, :4] == 1).all() and (full[:, 8:] == 5).all()
    assert ObsSpec("vision", ("fixed",)).assemble(feats, proprio).shape == (3, 4)
    noisy = ObsSpec("noisy_proprio", ("top",), 0.1).assemble(feats, proprio, np.random.default_rng(0))
    assert noisy.shape == (3, 28) and 0.02 < np.abs(noisy[:, 4:] - 5).mean() < 0.2


def test_batched_encoding_equals_per_frame_encoding() -> None:
    from pipeline.encoders import create_encoder
    from pipeline.rl.policy import GaussianMLPPolicy
    from pipeline.rl.vision import VisionSampler

    encoder = create_encoder("resnet10t", "random", resize=48, crop=40)
    policy = GaussianMLPPolicy(512 + 24, 28)
    runs = []
    for batch in (None, 1):
        with VisionSampler("door", encoder, ObsSpec("vision+proprio", ("top",)), n_envs=3,
                           workers=2, width=48, height=48, encode_batch=batch) as sampler:
            runs.append(sampler.sample(policy, 3, 6, seed=5))
            assert sampler.timings["frames"] == 3 * 6  # reset + 5 steps (none after the last)
    for a, b in zip(*runs, strict=True):
        # Features are rounded through float16, as in the store: batching may move the last bit.
        np.testing.assert_allclose(a["observations"], b["observations"], rtol=1e-2, atol=1e-3)


def test_rollouts_refuse_an_encoder_other_than_the_stores() -> None:
    from pipeline.encoders import create_encoder

    encoder = create_encoder("resnet10t", "random", resize=48, crop=40)
    attrs = {"encoder": "resnet10t", "weights": dict(encoder.weights), "precision": "fp32",
             "preprocessing": dict(encoder.preprocessing), "feature_dim": encoder.feature_dim}
    check_encoder_matches_store(encoder, attrs, "store")  # the same: accepted
    older = {k: v for k, v in attrs["preprocessing"].items() if k != "crop_mode"}
    check_encoder_matches_store(encoder, {**attrs, "preprocessing": older}, "store")  # pre-zoo store
    with pytest.raises(ConfigError, match="encoder: store 'resnet18' vs rollout 'resnet10t'"):
        check_encoder_matches_store(encoder, {**attrs, "encoder": "resnet18"}, "store")
    with pytest.raises(ConfigError, match="crop"):
        check_encoder_matches_store(encoder, {**attrs, "preprocessing": {**attrs["preprocessing"], "crop": 32}}, "s")


def test_state_pipeline_bc_dapg_evaluate(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.rl.checkpoints import load_policy
    from pipeline.rl.sampler import evaluate

    cfg = config(tiny_door_demos, **{"policy.obs_mode": "state"})
    result = Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("evaluate")
    s = result.summary
    dapg_dir = tmp_path / "dapg" / result.manifest["upstream"]["dapg"][:12]
    # The stage scored the DAPG checkpoint on evaluate.seed's episodes: scoring it here agrees.
    mine = evaluate(load_policy(dapg_dir / "policy.pt"), "door", 4, seed=cfg.evaluate.seed,
                    horizon=cfg.env.horizon)
    np.testing.assert_allclose(s["per_episode_return"], mine["per_episode_return"], rtol=1e-6)
    assert s["per_episode_success"] == mine["per_episode_success"]
    assert s["success_rate"] == 100.0 * sum(s["per_episode_success"]) / 4
    assert (result.out_dir / s["video"]).stat().st_size > 1000
    with open(dapg_dir / "log.csv") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == RRL_COLUMNS and len(rows) == 2
    assert (dapg_dir / "learning_curve.png").stat().st_size > 1000
    assert not (tmp_path / "render").exists()  # state mode renders nothing
    for manifest in tmp_path.rglob("manifest.json"):  # a data folder can be moved
        assert str(tmp_path) not in manifest.read_text(), manifest


def test_interrupted_dapg_resumes_to_the_uninterrupted_result(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Interrupt the dapg stage after iteration 1 (Ctrl-C), run it again: the runner resumes the
    unfinished output, only iteration 2 runs, and policy and log equal an uninterrupted run's."""
    import torch

    cfg = config(tiny_door_demos, **{"policy.obs_mode": "state", "dapg.iterations": "3",
                                     "dapg.eval_episodes": "1"})
    straight = Runner(cfg, STAGES, tmp_path / "straight", log=lambda m: None).run("dapg")

    def interrupt_after_iteration_1(message: str) -> None:
        if message.startswith("iter    1 "):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Runner(cfg, STAGES, tmp_path / "split", log=interrupt_after_iteration_1).run("dapg")
    logs: list[str] = []
    runner = Runner(cfg, STAGES, tmp_path / "split", log=logs.append)
    assert runner.result("dapg") is None  # interrupted: no manifest
    status = runner.stage_status("dapg")  # what `rrl status` prints, from the stage's own hook
    assert (status.state, status.reason) == ("missing", "interrupted (dapg iteration 2/3); resumes")
    resumed = runner.run("dapg")
    assert any("resuming unfinished output" in m for m in logs)
    assert any("at iteration 2" in m for m in logs)
    assert [m.split()[1] for m in logs if m.startswith("iter ")] == ["2"]
    assert resumed.key == straight.key and resumed.summary["iterations"] == 3
    a, b = (torch.load(r.out_dir / "policy.pt", weights_only=False)["policy"] for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _log_without_timings(straight.out_dir) == _log_without_timings(resumed.out_dir)


def test_more_iterations_continue_the_finished_shorter_run(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ITERS=2 finished, then ITERS=3: only iteration 2 runs (even where a 3-iteration run was cut
    short earlier), and the result equals a 3-iteration run from scratch; the 2-iteration output
    is left as it was."""
    import torch

    def cfg(iterations: int):  # type: ignore[no-untyped-def]
        return config(tiny_door_demos, **{"policy.obs_mode": "state", "dapg.eval_episodes": "1",
                                          "dapg.iterations": str(iterations)})

    straight = Runner(cfg(3), STAGES, tmp_path / "straight", log=lambda m: None).run("dapg")

    def interrupt_after_iteration_0(message: str) -> None:
        if message.startswith("iter    0 "):
            raise KeyboardInterrupt

    # A 3-iteration run cut short at iteration 1 first: the finished 2-iteration run is further.
    with pytest.raises(KeyboardInterrupt):
        Runner(cfg(3), STAGES, tmp_path / "split", log=interrupt_after_iteration_0).run("dapg")
    short = Runner(cfg(2), STAGES, tmp_path / "split", log=lambda m: None).run("dapg")
    short_log = (short.out_dir / "log.csv").read_text()
    logs: list[str] = []
    longer = Runner(cfg(3), STAGES, tmp_path / "split", log=logs.append).run("dapg")
    assert any(f"continuing the finished run {short.key[:12]}" in m for m in logs)
    assert [m.split()[1] for m in logs if m.startswith("iter ")] == ["2"]
    assert longer.key == straight.key != short.key and longer.summary["iterations"] == 3
    a, b = (torch.load(r.out_dir / "policy.pt", weights_only=False)["policy"] for r in (straight, longer))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _log_without_timings(straight.out_dir) == _log_without_timings(longer.out_dir)
    assert (short.out_dir / "log.csv").read_text() == short_log
    # Another seed is another run: nothing to continue.
    logs.clear()
    Runner(cfg(3).with_overrides({"policy.seed": "1"}), STAGES, tmp_path / "split",
           log=logs.append).run("dapg")
    assert not any("continuing" in m for m in logs)


def _log_without_timings(dapg_dir: Path) -> list[dict[str, str]]:
    with open(dapg_dir / "log.csv") as fh:
        return [{k: v for k, v in row.items() if not k.startswith("time_")}
                for row in csv.DictReader(fh)]


def test_vision_pipeline_end_to_end(tiny_door_demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tiny_door_demos, **TINY_VISION, **{"dapg.record_every": "1"})
    result = Runner(cfg, STAGES, tmp_path, log=lambda m: None).run("evaluate")
    assert result.summary["obs_mode"] == "vision+proprio"
    assert "RANDOM" in STAGES["evaluate"].describe(result)
    bc = json.loads(next((tmp_path / "bc").glob("*/manifest.json")).read_text())["summary"]
    assert bc["obs_dim"] == 512 + 24 and bc["samples"] == 24
    dapg = next(p for p in (tmp_path / "dapg").iterdir() if p.is_dir())
    assert sorted(p.name for p in (dapg / "rollouts").iterdir()) == ["iter_0000.hdf5", "iter_0001.hdf5"]
    with EpisodeReader(dapg / "rollouts" / "iter_0001.hdf5") as rollouts:
        assert rollouts.info["iteration"] == 1 and rollouts.info["obs_mode"] == "vision+proprio"
        assert len(rollouts.names) == 4 and rollouts.num_rows == 4 * 20
        assert all(isinstance(rollouts.attrs(i)["success"], bool) for i in range(4))
        assert [rollouts.attrs(i)["seed"] for i in range(4)] == [4, 5, 6, 7]  # seed + 1 * 4 + i
