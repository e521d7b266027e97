"""RAD's training loop (``train.py`` of github.com/MishaLaskin/rad) with exact checkpoint/resume.

Per env step, as RAD: choose an action (uniform at random for the first ``init_steps`` steps,
then sampled from the actor on the centre crop of the last ``frame_stack`` frames), take one
update once past ``init_steps``, then step the env (the task's action repeat) and render its
frame. Episode e resets with seed ``seed + e`` (``policy.seed``); evaluations play ``eval_episodes``
mean-action episodes seeded from ``evaluation_seed(seed)`` (the NPG trainer's range), at the start, every
``eval_every`` control steps and at the end.

Durability: after each episode its frames, actions and rewards are written to their own file
(once: episodes never change), then the checkpoint: the networks, optimisers, the actor's noise
generator, numpy's generator (actions, batches, crops), the logs, and the sha256 of every episode
file. A resumed run reloads those episodes into the replay memory, checks them, and continues
from the next episode: bit for bit the run that was never stopped (on the same torch thread count).
Everything is plain data, loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before torch: chooses the GL backend and keeps triton away from the GL context (offscreen.py).
from pipeline.envs.dmc import DMCEnv  # isort: skip

import numpy as np
import torch

from pipeline.config import RADConfig
from pipeline.envs.dmc_tasks import dmc_task_spec
from pipeline.envs.families import resolved_horizon
from pipeline.errors import ConfigError, NonFiniteError, bad_store
from pipeline.fileio import file_sha256, write_csv_atomic
from pipeline.outputs import CHECKPOINT, EVAL_LOG, LOG, RAD_REPLAY
from pipeline.rl.checkpoints import load_checkpoint, non_finite_tensors, save_checkpoint
from pipeline.rl.rad import RADAgent
from pipeline.rl.rad_replay import Episode, EpisodeReplay, center_crop, stack_frames
from pipeline.rl.rollouts import evaluation_seed

LOG_COLUMNS = ("iteration", "num_samples", "env_steps", "stoc_pol_mean", "eval_score",
               "critic_loss", "actor_loss", "alpha", "entropy", "time_sampling", "time_update",
               "replay_bytes")
EVAL_COLUMNS = ("iteration", "num_samples", "env_steps", "eval_score", "eval_std", "eval_min",
                "eval_max", "eval_success_rate", "time_eval")


@dataclass(frozen=True)
class RADSetup:
    """The run's fixed facts besides RAD's config: the env section's task, camera, shadows and
    episode length (env steps; None: the task's own), and the seed."""

    task: str
    camera: str
    shadows: bool
    seed: int
    horizon: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """What the encoder file's metadata records of the run (the horizon is in its log)."""
        return {"task": self.task, "camera": self.camera, "shadows": self.shadows,
                "seed": self.seed}

    def identity(self, cfg: RADConfig, horizon: int) -> dict[str, Any]:
        """What a checkpoint must have been written under to be resumed. The horizon sits in the
        config's dict, where rad.horizon was before it became env.horizon, so checkpoints
        written then still resume."""
        config = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "threads"}
        return {"config": {**config, "horizon": self.horizon}, "setup": self.as_dict(),
                "horizon": horizon}


@dataclass
class RADRun:
    agent: RADAgent
    rows: list[dict[str, float]] = field(default_factory=list)
    eval_rows: list[dict[str, float]] = field(default_factory=list)
    replay_bytes: int = 0
    resumed_from: int = 0  # episodes already done when this process started


def make_env(cfg: RADConfig, setup: RADSetup, horizon: int) -> DMCEnv:
    return DMCEnv(setup.task, horizon=horizon, cameras=(setup.camera,), width=cfg.render_size,
                  height=cfg.render_size, shadows=setup.shadows)


def frame(env: DMCEnv, camera: str) -> np.ndarray:
    """The env's frame, channel-first (3, S, S), as RAD's replay and encoder hold it."""
    return np.ascontiguousarray(env.render(camera).transpose(2, 0, 1))


def evaluate(agent: RADAgent, env: DMCEnv, cfg: RADConfig, camera: str, episodes: int,
             seed: int) -> list[float]:
    """Returns of mean-action episodes; episode i resets with ``evaluation_seed(seed) + i``."""
    returns = []
    for i in range(episodes):
        env.reset(seed=evaluation_seed(seed) + i)
        first = frame(env, camera)
        frames = np.empty((env.horizon + 1, *first.shape), dtype=np.uint8)
        frames[0], total = first, 0.0
        for t in range(env.horizon):
            stack = stack_frames(frames, t, cfg.frame_stack)
            action = agent.act(center_crop(stack, cfg.crop)[None], deterministic=True)[0]
            _, reward, _, _ = env.step(action)
            total += reward
            frames[t + 1] = frame(env, camera)
        returns.append(total)
    return returns


def _numpy_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def _load_episodes(out: Path, hashes: list[str], replay: EpisodeReplay) -> None:
    for e, expected in enumerate(hashes):
        path = out / RAD_REPLAY / f"episode_{e:05d}.pt"
        if not path.is_file() or file_sha256(path) != expected:
            raise bad_store(str(path), "episode file missing or not the one the checkpoint "
                            "recorded", "re-run the rad stage with FORCE=1")
        d = load_checkpoint(path)
        replay.add(Episode(d["frames"].numpy(), d["actions"].numpy(), d["rewards"].numpy()))


def train_rad(cfg: RADConfig, setup: RADSetup, out_dir: Path,
              log: Callable[[str], None] | None = print) -> RADRun:
    """Run RAD to ``rad.env_steps`` control steps in ``out_dir``, resuming a checkpoint there."""
    spec = dmc_task_spec(setup.task)
    horizon = resolved_horizon(setup.task, setup.horizon)
    total = spec.episodes_for(cfg.env_steps, horizon)
    out = Path(out_dir)
    (out / RAD_REPLAY).mkdir(parents=True, exist_ok=True)
    agent = RADAgent(cfg, spec.act_dim, setup.seed)
    rng = np.random.default_rng(setup.seed)
    replay = EpisodeReplay(cfg.replay_capacity, cfg.frame_stack)
    run, hashes = RADRun(agent), []
    identity = setup.identity(cfg, horizon)
    if (out / CHECKPOINT).exists():
        state = load_checkpoint(out / CHECKPOINT)
        if state.get("identity") != identity:
            raise ConfigError(f"{out / CHECKPOINT} was written by another RAD run "
                              f"({state.get('identity')}). Fix: run with those settings, or FORCE=1")
        agent.load_state_dict(state["agent"])
        rng.bit_generator.state = state["numpy_rng"]
        run.rows, run.eval_rows, hashes = state["rows"], state["eval_rows"], state["episodes"]
        _load_episodes(out, hashes, replay)
        run.resumed_from = len(hashes)
        if log:
            log(f"[rad] resuming at episode {len(hashes)} of {total}")
    env, eval_env = make_env(cfg, setup, horizon), make_env(cfg, setup, horizon)
    try:
        step = len(hashes) * horizon
        if not run.eval_rows and cfg.eval_episodes:
            run.eval_rows.append(_evaluation(agent, eval_env, cfg, setup, 0, 0, horizon, spec))
        for e in range(len(hashes), total):
            row, episode, step, measured = _episode(agent, env, cfg, setup, rng, replay, e, step,
                                                    horizon)
            replay.add(episode)
            path = out / RAD_REPLAY / f"episode_{e:05d}.pt"
            save_checkpoint(path, {"frames": torch.from_numpy(episode.frames),
                                   "actions": torch.from_numpy(episode.actions),
                                   "rewards": torch.from_numpy(episode.rewards)})
            hashes.append(file_sha256(path))
            control = step * spec.action_repeat
            row.update(env_steps=control, replay_bytes=replay.nbytes)
            due = control // cfg.eval_every > (control - horizon * spec.action_repeat) // cfg.eval_every
            if cfg.eval_episodes and (due or e == total - 1):
                ev = _evaluation(agent, eval_env, cfg, setup, e + 1, step, horizon, spec)
                run.eval_rows.append(ev)
                row["eval_score"] = ev["eval_score"]
            bad = [k for k in ("stoc_pol_mean", *measured) if not math.isfinite(row[k])]
            bad += non_finite_tensors(agent.critic.state_dict()) + non_finite_tensors(
                agent.actor.state_dict())
            if bad:
                raise NonFiniteError(f"RAD episode {e}: non-finite values in {', '.join(bad)}; "
                                     f"{out / CHECKPOINT} keeps episode {e - 1}. Fix: lower "
                                     "rad.critic_lr and rad.actor_lr, then re-run with FORCE=1")
            run.rows.append(row)
            save_checkpoint(out / CHECKPOINT, {
                "identity": identity, "agent": agent.state_dict(),
                "numpy_rng": _numpy_state(rng), "rows": run.rows, "eval_rows": run.eval_rows,
                "episodes": hashes})
            write_csv_atomic(out / LOG, LOG_COLUMNS, run.rows)  # after the checkpoint: rows = episodes kept
            write_csv_atomic(out / EVAL_LOG, EVAL_COLUMNS, run.eval_rows)
            if log:
                evaluated = not math.isnan(row["eval_score"])
                log(_progress(row, run.eval_rows[-1] if evaluated else None, e, total, horizon))
    finally:
        env.close()
        eval_env.close()
    run.replay_bytes = replay.nbytes
    return run


def _episode(agent: RADAgent, env: DMCEnv, cfg: RADConfig, setup: RADSetup,
             rng: np.random.Generator, replay: EpisodeReplay, e: int, step: int,
             horizon: int) -> tuple[dict[str, float], Episode, int, list[str]]:
    """One training episode from env step ``step``; returns its log row, the episode, the step
    count after it, and the update statistics it measured (none before ``init_steps``)."""
    act_dim = agent.act_dim
    env.reset(seed=setup.seed + e)
    first = frame(env, setup.camera)
    frames = np.empty((horizon + 1, *first.shape), dtype=np.uint8)
    frames[0] = first
    actions = np.zeros((horizon, act_dim), dtype=np.float32)
    rewards = np.zeros(horizon, dtype=np.float32)
    stats: dict[str, list[float]] = {}
    t_update = t_env = 0.0
    for t in range(horizon):
        started = time.perf_counter()
        if step < cfg.init_steps:
            action = rng.uniform(-1.0, 1.0, act_dim)
        else:
            stack = stack_frames(frames, t, cfg.frame_stack)
            action = agent.act(center_crop(stack, cfg.crop)[None], deterministic=False)[0]
        t_env += time.perf_counter() - started
        if step >= cfg.init_steps:
            started = time.perf_counter()
            running = Episode(frames[:t + 1], actions[:t], rewards[:t])
            batch = replay.sample(rng, cfg.batch_size, cfg.crop, running)
            for k, v in agent.update(batch, step).items():
                stats.setdefault(k, []).append(v)
            t_update += time.perf_counter() - started
        started = time.perf_counter()
        _, reward, _, _ = env.step(action)
        frames[t + 1] = frame(env, setup.camera)
        actions[t], rewards[t] = action, reward
        step += 1
        t_env += time.perf_counter() - started
    nan = float("nan")
    row = {"iteration": e, "num_samples": horizon, "stoc_pol_mean": float(rewards.sum()),
           "eval_score": nan, "time_sampling": t_env, "time_update": t_update,
           **{k: float(np.mean(stats[k])) if k in stats else nan
              for k in ("critic_loss", "actor_loss", "alpha", "entropy")}}
    return row, Episode(frames, actions, rewards), step, sorted(stats)


def _evaluation(agent: RADAgent, env: DMCEnv, cfg: RADConfig, setup: RADSetup, episodes_done: int,
                step: int, horizon: int, spec: Any) -> dict[str, float]:
    started = time.perf_counter()
    returns = evaluate(agent, env, cfg, setup.camera, cfg.eval_episodes, setup.seed)
    return {"iteration": episodes_done, "num_samples": step, "env_steps": step * spec.action_repeat,
            "eval_score": float(np.mean(returns)), "eval_std": float(np.std(returns)),
            "eval_min": float(np.min(returns)), "eval_max": float(np.max(returns)),
            "eval_success_rate": 0.0, "time_eval": time.perf_counter() - started}


def _progress(row: dict[str, float], ev: dict[str, float] | None, e: int, total: int,
              horizon: int) -> str:
    text = (f"episode {e + 1:4d}/{total} env steps {int(row['env_steps']):7d} return "
            f"{row['stoc_pol_mean']:7.1f}")
    if ev is not None:
        text += f" eval {ev['eval_score']:.1f} (+- {ev['eval_std']:.1f})"
    per = row["time_update"] / horizon
    return text + (f" | {row['time_sampling']:.1f} s env, {row['time_update']:.1f} s updates "
                   f"({per:.2f} s/step), replay {row['replay_bytes'] / 2**20:.0f} MiB")
