"""The NPG/DAPG iteration loop (mjrl's `train_agent` + `train_step`) with exact checkpoint/resume.

Each iteration: sample trajectories, compute returns and GAE with the current baseline, take one
NPG/DAPG step, refit the baseline, evaluate the mean policy, then write the checkpoint and the
CSV log. The checkpoint (written atomically) holds everything the next iteration depends on, so
a resumed run is bit-identical to an uninterrupted one with the same settings.

What the policy sees is the sampler's business (see `pipeline.rl.rollout_loop`): pass a vision
sampler and demo arrays in the same feature space for RRL. An iteration whose numbers are not
finite (a diverged update) stops the run before anything of it is saved.

Imports torch, not MuJoCo: the sampler is made by the caller.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import DAPGConfig
from pipeline.envs.families import resolved_horizon, task_facts
from pipeline.errors import ConfigError, NonFiniteError
from pipeline.fileio import write_csv_atomic
from pipeline.outputs import CHECKPOINT, EVAL_LOG, LOG
from pipeline.rl.checkpoints import (
    load_checkpoint,
    non_finite_tensors,
    numpy_rng_state,
    save_checkpoint,
    set_numpy_rng_state,
)
from pipeline.rl.npg import discounted_returns, gae, npg_step
from pipeline.rl.policy import Array, GaussianMLPPolicy, MLPBaseline
from pipeline.rl.rollouts import Rollout, Sampler, evaluation_seed, success_rate, summarize
from pipeline.settings import legacy_value

# The columns of RRL's logs/log.csv, in its order.
LOG_COLUMNS = (
    "iteration", "time_sampling", "stoc_pol_mean", "stoc_pol_std", "stoc_pol_max", "stoc_pol_min",
    "alpha", "delta", "time_vpg", "time_npg", "kl_dist", "surr_improvement", "running_score",
    "success_rate", "num_samples", "time_VF", "VF_error_before", "VF_error_after", "eval_score",
)
EVAL_COLUMNS = ("iteration", "eval_score", "eval_success_rate", "time_eval")
# Settings that may differ between a run and its resumption (they change no result).
_RESUMABLE = {"iterations", "envs", "record_every"}


def advantages_and_returns(rollouts: Sequence[Rollout], baseline: MLPBaseline, gamma: float,
                           gae_lambda: float, horizon_value: str = "zero"
                           ) -> tuple[list[Array], list[Array]]:
    """Per rollout: GAE with the baseline's predictions, and discounted returns (the VF targets).

    Every rollout here ends at the horizon. mjrl (utils/process_samples.py) appends 0 after a path
    that is done and its last prediction otherwise; under gym's TimeLimit, which RRL's and
    hand_dapg's envs had, every path is done at the horizon, so ``horizon_value="zero"`` is what
    they ran. The VF targets end at 0 either way, as mjrl's.
    """
    advantages, returns = [], []
    for rollout in rollouts:
        values = baseline.predict(rollout["observations"])
        bootstrap = horizon_value == "bootstrap" and not bool(rollout["terminated"])
        terminal = float(values[-1]) if bootstrap else 0.0
        advantages.append(gae(rollout["rewards"], values, gamma, gae_lambda, terminal))
        returns.append(discounted_returns(rollout["rewards"], gamma))
    return advantages, returns


def _require_finite(it: int, row: dict[str, float], policy: GaussianMLPPolicy, cfg: DAPGConfig,
                    ckpt_path: Path, evaluated: bool) -> None:
    """Stop before a diverged iteration is saved: the checkpoint keeps the last good one."""
    # eval_score is NaN on purpose when there is no per-iteration evaluation.
    bad = [k for k, v in row.items() if not math.isfinite(v) and (evaluated or k != "eval_score")]
    bad += [f"policy {name}" for name in non_finite_tensors(policy.state_dict())]
    if bad:
        kept = f"{ckpt_path} still holds iteration {it - 1}" if it else "no checkpoint was written"
        raise NonFiniteError(
            f"DAPG iteration {it}: non-finite values (NaN or inf) in {', '.join(bad)}; nothing of "
            f"this iteration was saved ({kept}). Likely cause: the update diverged, dapg.step_size={cfg.step_size:g} "
            f"or dapg.lam0={cfg.lam0:g} too large. Fix: lower them (e.g. --set "
            f"dapg.step_size=0.05) and re-run with FORCE=1")


def _progress_line(it: int, row: dict[str, float], ev: dict[str, float] | None,
                   scored: bool) -> str:
    """One iteration's log line; success columns only where the task defines success (not DMC)."""
    ok = (lambda rate: f" ({rate:.0f}%)") if scored else (lambda rate: "")
    text = f"iter {it:4d} return {row['stoc_pol_mean']:8.1f}"
    text += f" success {row['success_rate']:5.1f}%" if scored else ""
    text += f" eval {ev['eval_score']:.1f}{ok(ev['eval_success_rate'])}" if ev else ""
    return (text + f" kl {row['kl_dist']:.4f} sample {row['time_sampling']:.1f}s "
            f"npg {row['time_npg']:.1f}s vf {row['time_VF']:.1f}s")


def _key_config(cfg: DAPGConfig, horizon: int, reward: str) -> dict[str, Any]:
    """The settings a checkpoint was written with; a resumption must match them."""
    return {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESUMABLE},
            "horizon": horizon, "reward": reward}


def train_dapg(
    policy: GaussianMLPPolicy,
    baseline: MLPBaseline,
    sampler: Sampler,
    cfg: DAPGConfig,
    out_dir: str | Path,
    task: str,
    demo_obs: Array | None = None,
    demo_act: Array | None = None,
    seed: int = 0,
    eval_episodes: int = 25,
    eval_seed: int | None = None,
    eval_sampler: Sampler | None = None,
    resume: bool = True,
    on_rollouts: Callable[[int, list[Rollout]], None] | None = None,
    log: Callable[[str], None] | None = print,
    horizon: int | None = None,
    reward: str = "dense",
) -> list[dict[str, float]]:
    """Run DAPG (NPG when cfg.use_demos is False) up to cfg.iterations; returns the log rows.

    `policy` should be BC-initialised for DAPG. Trajectory i of iteration k uses seed
    seed + k * cfg.trajectories + i (mjrl advances its seed by N each iteration); evaluation uses
    the same `eval_seed` every iteration, as mjrl does, so eval_score compares like with like.
    `on_rollouts(iteration, rollouts)` is called with each training batch (e.g. to store it).
    """
    # Unset: the task's own episode length. Resolved in the checkpointed config too, so a run
    # and its resumption agree whether the horizon was set or left to the task.
    horizon = resolved_horizon(task, horizon)
    settings = _key_config(cfg, horizon, reward)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    eval_seed = evaluation_seed(seed) if eval_seed is None else eval_seed
    use_demos = cfg.use_demos and demo_obs is not None and demo_act is not None
    rows: list[dict[str, float]] = []
    eval_rows: list[dict[str, float]] = []
    running_score: float | None = None
    start = 0

    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        # "device" was stored once (it changes no result): checkpoints that have it still resume.
        stored = {k: v for k, v in state["config"].items() if k != "device"}
        # Checkpoints from before dapg.horizon_value bootstrapped at the horizon.
        stored.setdefault("horizon_value", legacy_value(DAPGConfig, "horizon_value"))
        if stored != settings or state["seed"] != seed:
            raise ConfigError(
                f"{ckpt_path} was written with different settings ({state['config']}, seed "
                f"{state['seed']}); resume it with those, or pass resume=False / a new out_dir")
        policy.load_state_dict(state["policy"])
        baseline.load_state_dict(state["baseline"])
        torch.set_rng_state(state["torch_rng"])
        set_numpy_rng_state(state["numpy_rng"])
        rows, eval_rows = state["rows"], state["eval_rows"]
        running_score, start = state["running_score"], state["iteration"]
        if log:
            log(f"resuming {out} at iteration {start}")

    for it in range(start, cfg.iterations):
        t0 = time.perf_counter()
        batch = sampler.sample(policy, cfg.trajectories, horizon,
                               seed + it * cfg.trajectories, deterministic=False)
        time_sampling = time.perf_counter() - t0
        if on_rollouts is not None:
            on_rollouts(it, batch)

        advantages, returns = advantages_and_returns(batch, baseline, cfg.gamma, cfg.gae_lambda,
                                                     cfg.horizon_value)
        step = npg_step(
            policy,
            np.concatenate([r["observations"] for r in batch]),
            np.concatenate([r["actions"] for r in batch]),
            np.concatenate(advantages),
            demo_obs if use_demos else None,
            demo_act if use_demos else None,
            demo_weight=cfg.lam0 * cfg.lam1**it if use_demos else 0.0,
            step_size=cfg.step_size, cg_iters=cfg.cg_iters, damping=cfg.cg_damping,
        )

        scores = np.array([r["rewards"].sum() for r in batch])
        running_score = (float(scores.mean()) if running_score is None
                         else 0.9 * running_score + 0.1 * float(scores.mean()))
        t0 = time.perf_counter()
        vf_before, vf_after = baseline.fit([r["observations"] for r in batch], returns)
        time_vf = time.perf_counter() - t0

        row: dict[str, float] = {
            "iteration": it, "time_sampling": time_sampling,
            "stoc_pol_mean": float(scores.mean()), "stoc_pol_std": float(scores.std()),
            "stoc_pol_max": float(scores.max()), "stoc_pol_min": float(scores.min()),
            **step, "running_score": running_score, "success_rate": success_rate(batch, task),
            "num_samples": int(sum(len(r["rewards"]) for r in batch)), "time_VF": time_vf,
            "VF_error_before": vf_before, "VF_error_after": vf_after, "eval_score": float("nan"),
        }
        if eval_episodes > 0:
            t0 = time.perf_counter()
            ev = summarize((eval_sampler or sampler).sample(
                policy, eval_episodes, horizon, eval_seed, deterministic=True), task)
            row["eval_score"] = ev["mean_return"]
            eval_rows.append({"iteration": it, "eval_score": ev["mean_return"],
                              "eval_success_rate": ev["success_rate"],
                              "time_eval": time.perf_counter() - t0})
        _require_finite(it, row, policy, cfg, ckpt_path, eval_episodes > 0)
        rows.append(row)

        save_checkpoint(ckpt_path, {
            "iteration": it + 1, "config": settings, "seed": seed,
            "policy": policy.state_dict(), "policy_config": policy.config(),
            "baseline": baseline.state_dict(), "running_score": running_score,
            "torch_rng": torch.get_rng_state(), "numpy_rng": numpy_rng_state(),
            "rows": rows, "eval_rows": eval_rows,
        })
        write_csv_atomic(out / LOG, LOG_COLUMNS, rows)
        write_csv_atomic(out / EVAL_LOG, EVAL_COLUMNS, eval_rows)
        if log:
            log(_progress_line(it, row, eval_rows[-1] if eval_episodes > 0 else None,
                               task_facts(task).has_success))
    return rows
