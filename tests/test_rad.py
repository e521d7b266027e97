"""RAD: the written encoder is the actor's, frame stacks are built alike from episode files and from
stepping envs, the replay's crops and stacks follow RAD, and the rad stage resumes after kill -9
to the result of a run never stopped, then is a cache hit."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import PipelineConfig, RADConfig
from pipeline.encoders.framestack import FrameStackView, stacked_rows
from pipeline.errors import ConfigError, WeightsError
from pipeline.rl.rad_replay import (
    Batch,
    Episode,
    EpisodeReplay,
    center_crop,
    random_crop,
    stack_frames,
)
from tests.helpers import kill_group, load_bench

TASK = "cartpole-swingup"
# Small enough for seconds: 20 px renders cropped to 16 (conv sides 7-5-3-1), 5-step episodes.
TINY_RAD = {"rad.env_steps": "160", "env.horizon": "5", "rad.render_size": "20", "rad.crop": "16",
            "rad.filters": "4", "rad.hidden": "16", "rad.feature_dim": "8", "rad.batch_size": "4",
            "rad.init_steps": "6", "rad.eval_every": "80", "rad.eval_episodes": "1",
            "rad.threads": "1"}


def tiny_rad(**extra: str) -> RADConfig:
    return PipelineConfig().with_overrides({**TINY_RAD, **extra}).rad


# rad keys computed on the rad branch before the env section existed there, with the old names
# (demos.task, rad.horizon, render.cameras/width/height/shadows): outputs made then, like the
# finished DMControl-100k run of docs/rad_dmc.md, stay cache hits under the new names.
RAD_KEYS = {
    "092b1bf1a57bfa3d": {"env.task": TASK},
    "9bb51c447c413015": {"env.task": TASK, "rad.batch_size": "32", "rad.threads": "1",
                         "env.width": "100", "env.height": "100"},
    "515730b92fb02f85": {"env.task": TASK, "rad.env_steps": "800", "env.horizon": "20",
                         "rad.render_size": "40", "rad.crop": "32", "rad.batch_size": "16",
                         "rad.hidden": "64", "rad.init_steps": "20", "rad.eval_every": "400",
                         "rad.eval_episodes": "2"},
    "aacfc2c12c9a704f": {"env.task": "finger-spin", "env.horizon": "50", "env.cameras": "cam0",
                         "env.shadows": "true", "policy.seed": "2"},
}


@pytest.mark.parametrize("key", list(RAD_KEYS))
def test_rad_keys_did_not_change_when_settings_moved_to_env(key: str, tmp_path: Path) -> None:
    from pipeline.runner import Runner
    from stages import STAGES

    runner = Runner(PipelineConfig().with_overrides(RAD_KEYS[key]), STAGES, tmp_path)
    assert runner.key("rad")[:16] == key
    if "env.horizon" not in RAD_KEYS[key]:  # the task's own horizon, set, is the same run
        own = {**RAD_KEYS[key], "env.horizon": "125" if RAD_KEYS[key]["env.task"] == TASK else "500"}
        assert Runner(PipelineConfig().with_overrides(own), STAGES, tmp_path).key("rad")[:16] == key
    with pytest.raises(ConfigError, match=r"rad\.horizon is now env\.horizon.*Fix"):
        PipelineConfig().with_overrides({"rad.horizon": "5"})


def random_episode(rng: np.random.Generator, steps: int, side: int = 20) -> np.ndarray:
    return rng.integers(0, 256, size=(steps + 1, 3, side, side), dtype=np.uint8)


def test_written_encoder_gives_the_actors_features(tmp_path: Path) -> None:
    from pipeline.encoders import create_encoder, encoder_spec
    from pipeline.rl.rad import RADAgent, to_float
    from pipeline.rl.rad_weights import check_encoder_file, stacks_of_episode, write_encoder

    cfg = tiny_rad()
    agent = RADAgent(cfg, act_dim=1, seed=3)
    # Train a little so the actor's head differs from its initialisation (and from the critic's).
    rng = np.random.default_rng(0)
    replay = EpisodeReplay(100, cfg.frame_stack)
    replay.add(Episode(random_episode(rng, 12), rng.uniform(-1, 1, (12, 1)).astype(np.float32),
                       rng.uniform(0, 1, 12).astype(np.float32)))
    for step in range(4):
        agent.update(replay.sample(rng, cfg.batch_size, cfg.crop), step)
    path = tmp_path / "encoder.safetensors"
    write_encoder(agent, path, {"task": TASK})
    spec = encoder_spec("rad", str(path))
    assert (spec.feature_dim, spec.frame_stack, spec.input_size) == (8, 3, (20, 16))
    frames = random_episode(rng, 9)
    stacks = stacks_of_episode(frames, 3, 10)  # (10, 9, 20, 20), channel-first
    actor = agent.actor_features(center_crop(stacks, cfg.crop))
    frozen = create_encoder("rad", str(path)).encode(np.ascontiguousarray(stacks.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(frozen, actor, rtol=0, atol=1e-6)
    critic = agent.critic.encoder(to_float(center_crop(stacks, cfg.crop))).detach().numpy()
    assert np.abs(critic - actor).max() > 1e-3  # it is the actor's head, not the critic's
    import torch

    torch.save({"frames": torch.from_numpy(frames)}, tmp_path / "episode.pt")
    assert check_encoder_file(agent, path, tmp_path / "episode.pt", 8) <= 1e-6
    with pytest.raises(WeightsError, match=r"not a RAD encoder file.*Fix:"):
        from safetensors.torch import save_file

        save_file(agent.encoder_state(), str(tmp_path / "plain.safetensors"))
        encoder_spec("rad", str(tmp_path / "plain.safetensors"))


def test_stacks_from_an_episode_file_and_from_stepping_envs_agree() -> None:
    rng = np.random.default_rng(1)
    lengths = (4, 1, 6)
    episodes = [rng.integers(0, 256, size=(n, 5, 5, 3), dtype=np.uint8) for n in lengths]
    flat = np.concatenate(episodes)
    ends = np.cumsum(lengths)
    stored = stacked_rows(lambda a, b: flat[a:b], 0, len(flat), ends, 3)
    live = []

    class Env:  # what FrameStackView needs of an env: its step count and a frame
        t = 0

    env, view = Env(), FrameStackView(3, lambda e, obs: {"frames": {"cam": obs}})
    for episode in episodes:
        for t, frame in enumerate(episode):
            env.t = t
            live.append(view(env, frame)["stacked"]["cam"])
    np.testing.assert_array_equal(stored, np.stack(live))
    # Row 1 of the first episode: its first frame stands in for the frame before it.
    np.testing.assert_array_equal(stored[1], np.concatenate([flat[0], flat[0], flat[1]], axis=-1))
    # The one-step episode is three copies of its frame; a middle row reads only rows 2..5.
    np.testing.assert_array_equal(stored[4], np.concatenate([flat[4]] * 3, axis=-1))
    np.testing.assert_array_equal(stacked_rows(lambda a, b: flat[a:b], 7, 9, ends, 3), stored[7:9])
    # RAD's channel-first stacks of the same frames are the same numbers, laid out channel-first.
    first = episodes[0].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(stack_frames(first, 1, 3), stored[1].transpose(2, 0, 1))


def test_replay_crops_one_window_per_stack_and_samples_the_running_episode() -> None:
    rng = np.random.default_rng(2)
    stacks = rng.integers(0, 256, size=(64, 9, 20, 20), dtype=np.uint8)
    cropped = random_crop(stacks, 16, np.random.default_rng(0))
    offsets = np.random.default_rng(0).integers(0, 5, size=(64, 2))
    for i, (top, left) in enumerate(offsets):
        np.testing.assert_array_equal(cropped[i], stacks[i, :, top:top + 16, left:left + 16])
    assert len({tuple(o) for o in offsets}) > 10  # RAD's offsets: 0 .. side - crop, per sample
    replay = EpisodeReplay(capacity=12, frame_stack=3)
    for n in (5, 5, 5):
        replay.add(Episode(random_episode(rng, n), np.zeros((n, 1), np.float32),
                           np.arange(n, dtype=np.float32)))
    assert len(replay.episodes) == 2 and replay.transitions == 10  # the oldest went at 15 > 12
    assert replay.nbytes == 2 * (6 * 3 * 400 + 5 * 4 + 5 * 4)
    running = Episode(random_episode(rng, 3)[:3], np.ones((2, 1), np.float32),
                      np.full(2, 9, np.float32))
    batch = replay.sample(np.random.default_rng(4), 400, 16, running)
    assert batch.obs.shape == (400, 9, 16, 16) and batch.next_obs.shape == (400, 9, 16, 16)
    assert set(np.unique(batch.rewards)) == {0, 1, 2, 3, 4, 9}  # each step, and the running one


def test_rad_settings_are_checked_and_only_dmc_tasks_run(tmp_path: Path) -> None:
    from pipeline.runner import Runner
    from stages import STAGES

    with pytest.raises(ConfigError, match=r"at most rad\.render_size"):
        PipelineConfig().with_overrides({"rad.crop": "120"})
    with pytest.raises(ConfigError, match=r"19 puts them a pixel apart"):  # 9 against 10
        PipelineConfig().with_overrides({"rad.render_size": "103"})
    with pytest.raises(ConfigError, match=r"Adroit task.*Fix: TASK=cartpole-swingup"):
        Runner(PipelineConfig(), STAGES, tmp_path).key("rad")
    cfg = PipelineConfig().with_overrides({"env.task": TASK, **TINY_RAD})
    runner = Runner(cfg, STAGES, tmp_path)
    assert runner.upstream_of("rad") == () and runner.inputs("rad")["camera"] == "fixed"
    threads = Runner(dataclasses.replace(cfg, rad=dataclasses.replace(cfg.rad, threads=2)),
                     STAGES, tmp_path)
    assert threads.key("rad") == runner.key("rad")  # threads change no result's key


@pytest.mark.gl
def test_a_crash_after_any_episode_resumes_to_the_same_run(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.rl.rad_train as rad_train
    from pipeline.runner import Runner
    from pipeline.study.cells import cell_state, plan
    from pipeline.study.spec import load_experiment
    from stages import STAGES

    values = {"env.task": TASK, **TINY_RAD, "rad.env_steps": "120"}  # 3 episodes of 40 steps
    cfg, setup = tiny_rad(**values), rad_train.RADSetup(TASK, "fixed", False, 0, horizon=5)
    straight = rad_train.train_rad(cfg, setup, tmp_path / "straight", log=None)
    data = tmp_path / "data"
    runner = Runner(PipelineConfig().with_overrides(values), STAGES, data)
    crashed = runner.out_dir("rad")  # where the stage would resume it
    real_write, writes = rad_train.write_csv_atomic, []

    def crash_after_second_episode(path: Path, columns: Any, rows: Any) -> None:
        real_write(path, columns, rows)
        writes.append(path)
        if len(writes) == 4:  # log.csv and eval.csv of episode 1: its checkpoint is on disk
            raise KeyboardInterrupt

    monkeypatch.setattr(rad_train, "write_csv_atomic", crash_after_second_episode)
    with pytest.raises(KeyboardInterrupt):
        rad_train.train_rad(cfg, setup, crashed, log=None)
    monkeypatch.setattr(rad_train, "write_csv_atomic", real_write)
    # The one status engine says how far it got, for `rrl status` and for a study's RAD cell.
    st = runner.stage_status("rad")
    assert (st.state, st.reason) == ("missing", "interrupted (rad episode 2/3); resumes")
    toml = tmp_path / "rad_cell.toml"
    toml.write_text("[base]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in values.items())
                    + '[[cells]]\nname = "RAD"\nstage = "rad"\n[budgets.smoke]\nseeds = [0]\n')
    exp = load_experiment(toml)
    (p,) = plan(exp, exp.cells("smoke"), STAGES, data)
    assert p.key == runner.key("rad") and p.own == ("rad",) and p.shared == ()
    state = cell_state(p, data)
    assert (state.state, state.detail) == ("missing", "interrupted (rad episode 2/3); resumes")
    resumed = rad_train.train_rad(cfg, setup, crashed, log=None)
    assert resumed.resumed_from == 2 and len(resumed.rows) == len(straight.rows) == 3

    def results(rows: list[dict[str, float]]) -> list[dict[str, float | None]]:
        return [{k: None if v != v else v for k, v in r.items() if not k.startswith("time_")}
                for r in rows]  # NaN (no update yet, no evaluation) compares as None

    assert results(resumed.rows) == results(straight.rows)
    assert results(resumed.eval_rows) == results(straight.eval_rows)
    for name, tensor in straight.agent.encoder_state().items():
        assert resumed.agent.encoder_state()[name].equal(tensor), name
    other = dataclasses.replace(cfg, batch_size=5)
    with pytest.raises(ConfigError, match=r"another RAD run.*Fix"):
        rad_train.train_rad(other, setup, crashed, log=None)


def _rrl(data: Path, *args: str) -> list[str]:
    sets = [f"--set={k}={v}" for k, v in TINY_RAD.items()]
    return [sys.executable, "-m", "stages", "--data", str(data), "--task", TASK, *sets, *args]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root}


def _results(path: Path) -> list[dict[str, str]]:
    """A log's rows without the seconds columns (the only ones a resume may change)."""
    import csv

    with open(path) as fh:
        return [{k: v for k, v in row.items() if not k.startswith("time_")}
                for row in csv.DictReader(fh)]


def _outputs(data: Path) -> dict[str, Any]:
    (folder,) = [p.parent for p in (data / "rad").glob("*/manifest.json")]
    return {"log": _results(folder / "log.csv"), "eval": _results(folder / "eval.csv"),
            "encoder": hashlib.sha256((folder / "encoder.safetensors").read_bytes()).hexdigest(),
            "replay_left": (folder / "replay").exists() or (folder / "checkpoint.pt").exists()}


@pytest.mark.slow
@pytest.mark.gl
def test_kill_9_then_resume_equals_a_run_never_stopped_and_rerun_is_a_cache_hit(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_rrl(straight, "run", "rad"), env=_env(), check=True, capture_output=True)
    proc = subprocess.Popen(_rrl(killed, "run", "rad"), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Kill it once it has checkpointed an episode past the random start (updates are running).
    while not list(killed.glob("rad/*/replay/episode_00002.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled"
        time.sleep(0.05)
    kill_group(proc, "rad")
    assert not list(killed.glob("rad/*/manifest.json"))
    resumed = subprocess.run(_rrl(killed, "run", "rad"), env=_env(), check=True,
                             capture_output=True, text=True)
    assert "resuming at episode" in resumed.stderr
    assert _outputs(killed) == _outputs(straight)
    assert not _outputs(straight)["replay_left"]  # the replay is deleted once the outputs exist
    again = subprocess.run(_rrl(killed, "run", "rad"), env=_env(), check=True, capture_output=True,
                           text=True)
    assert "cache hit" in again.stdout + again.stderr and "running" not in again.stderr


@pytest.mark.gl
def test_fixed_rad_encoder_through_the_store_and_npg(tmp_path: Path) -> None:
    """`rad` -> ENCODER=rad WEIGHTS=<its key> -> random rollouts encoded as stacks -> NPG from
    the frozen features -> evaluate; the stored features are the actor's on the same frames."""
    from pipeline.rl.rad import RADAgent
    from pipeline.rl.rad_replay import center_crop
    from pipeline.runner import Runner
    from pipeline.store.episodes import EpisodeReader
    from pipeline.store.features import open_features
    from pipeline.vae.resolve import resolve_trained_weights
    from stages import STAGES

    sizes = {"env.width": "20", "env.height": "20"}
    rad_cfg = PipelineConfig().with_overrides({"env.task": TASK, **TINY_RAD, **sizes})
    rad = Runner(rad_cfg, STAGES, tmp_path, log=lambda m: None).run("rad")
    assert Runner(rad_cfg, STAGES, tmp_path, log=lambda m: None).run("rad").cache_hit
    npg = rad_cfg.with_overrides({
        "encode.encoder": "rad", "encode.weights": rad.key[:12], "encode.workers": "1",
        "dapg.use_demos": "false", "env.horizon": "6", "dapg.iterations": "1",
        "dapg.trajectories": "2", "dapg.envs": "2", "dapg.eval_episodes": "1",
        "rollouts.episodes": "2", "rollouts.envs": "2", "rollouts.workers": "1",
        "evaluate.episodes": "2", "evaluate.video_episodes": "0"})
    npg = resolve_trained_weights(npg, tmp_path)
    assert npg.encode.weights == str(rad.out_dir / "encoder.safetensors")
    runner = Runner(npg, STAGES, tmp_path, log=lambda m: None)
    result = runner.run("evaluate")
    assert np.isfinite(result.summary["mean_return"]) and result.summary["episodes"] == 2
    bc = runner.result("bc")
    assert bc is not None and bc.summary["obs_dim"] == 8 + 2  # RAD's features + cart proprio
    encode, rollouts = runner.result("encode"), runner.result("rollouts")
    assert encode is not None and rollouts is not None
    stored = open_features(str(tmp_path / "features.zarr"), encode.key).read("fixed")
    with EpisodeReader(rollouts.file("episodes_file")) as reader:
        frames = np.stack([reader.read_rows("fixed", a, a + 6) for a in (0, 6)])  # 2 x 6 steps
    agent = RADAgent(rad_cfg.rad, 1, 0)  # rebuilt from the written encoder file's tensors
    from safetensors.torch import load_file

    state = load_file(str(rad.out_dir / "encoder.safetensors"))
    agent.convs.load_state_dict({k[len("convs."):]: v for k, v in state.items() if k.startswith("convs.")})
    agent.actor.fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    agent.actor.ln.load_state_dict({"weight": state["ln.weight"], "bias": state["ln.bias"]})
    expected = []
    for episode in frames:
        chw = episode.transpose(0, 3, 1, 2)
        stacks = np.stack([stack_frames(chw, t, 3) for t in range(len(chw))])
        expected.append(agent.actor_features(center_crop(stacks, 16)))
    np.testing.assert_allclose(stored, np.concatenate(expected), atol=2e-3)  # float16 store


def test_report_lists_a_cell_waiting_for_its_rad_encoder(tmp_path: Path) -> None:
    """A fixed-encoder cell whose RAD output does not exist yet is a table row saying so, as wide
    as the table, beside the cells that can be planned (none of them run: nothing is trained)."""
    from pipeline.study.report import write_report
    from pipeline.study.spec import load_experiment
    from stages import STAGES

    toml = tmp_path / "waiting.toml"
    toml.write_text(f'[base]\n"env.task" = "{TASK}"\n"dapg.use_demos" = false\n'
                    '[[cells]]\nname = "RAD"\nstage = "rad"\n'
                    '[[cells]]\nname = "fixed"\n"encode.encoder" = "rad"\n'
                    '"encode.weights" = "0123456789ab"\n'
                    '[[cells]]\nname = "state"\n"policy.obs_mode" = "state"\n'
                    '[budgets.smoke]\nseeds = [0]\n')
    _, md = write_report([load_experiment(toml)], "smoke", PipelineConfig(), STAGES,
                         tmp_path / "data", tmp_path / "out/report", tmp_path / "no_reference")
    lines = md.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| cell | state |"))
    table = lines[header:lines.index("", header)]
    (waiting,) = [row for row in table if row.startswith("| fixed |")]
    assert "not planned: WEIGHTS=0123456789ab names 0 finished rad outputs" in waiting
    assert {row.count("|") for row in table} == {table[0].count("|")}
    assert any(row.startswith("| RAD | missing |") for row in table)


def test_sac_core_learns_a_bandit_from_state() -> None:
    """RAD's updates (bench/sac_state.py runs them on state vectors): on a one-step task whose
    reward peaks at action 0.5, the critic and actor move the mean action there."""
    import torch

    bench = load_bench("sac_state")
    torch.manual_seed(0)
    cfg = RADConfig(batch_size=64, hidden=32, feature_dim=8, discount=0.01, init_temperature=0.01)
    rng = np.random.default_rng(0)
    with bench.float_inputs():
        agent = bench.state_agent(cfg, obs_dim=3, act_dim=1, seed=0)
        probe = rng.normal(size=(16, 3)).astype(np.float32)
        before = agent.act(probe, deterministic=True)
        for step in range(1000):
            obs = rng.normal(size=(64, 3)).astype(np.float32)
            actions = rng.uniform(-1, 1, size=(64, 1)).astype(np.float32)
            rewards = (-((actions - 0.5) ** 2)).astype(np.float32)
            agent.update(Batch(obs, actions, rewards, obs), step)
        after = agent.act(probe, deterministic=True)
    assert np.abs(after - 0.5).max() < 0.15, after.ravel()
    assert np.abs(before - 0.5).mean() > 0.3, before.ravel()
