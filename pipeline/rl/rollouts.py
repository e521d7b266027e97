"""What a rollout is, how success is counted, and what a sampler promises; numpy only.

Checkpoint loading, state-mode training and the stages import this module without pulling in
MuJoCo (and its GL context) or torch: only creating a sampler needs the simulator.

A rollout is a dict of arrays: ``observations`` (T, D) policy inputs, ``actions`` (T, A),
``rewards`` (T,), ``success`` (T,) the env's per-step success signal, ``terminated`` () whether
the episode ended for real (False for a horizon cut: the value is then bootstrapped) and
``seed`` () the seed of its reset and action noise. Recording samplers add ``frames``
(camera -> (T, H, W, 3)), ``proprio``, ``states`` and ``state_obs``, each row the state the
action of that step was chosen in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from pipeline.envs.families import task_facts
from pipeline.errors import NonFiniteError

Array = np.ndarray
Rollout = dict[str, Array]

# Evaluation episodes start this far above the training seed, so that the initial states the
# policy is scored on are never ones it was trained on (training uses seed + k * trajectories + i).
EVAL_SEED_OFFSET = 1_000_000


def evaluation_seed(seed: int) -> int:
    """The first reset seed of the per-iteration (and BC start) evaluation for training seed `seed`."""
    return seed + EVAL_SEED_OFFSET


def episode_success(rollout: Rollout, task: str) -> bool:
    """hand_dapg's rule (the goal held for more than the task's ``success_steps``); always False
    for a family without success (DeepMind Control: its results are returns)."""
    steps = task_facts(task).success_steps
    return steps is not None and int(np.sum(rollout["success"])) > steps


def success_rate(rollouts: Sequence[Rollout], task: str) -> float:
    """Percentage of successful rollouts, as the `success_rate` column of mjrl/RRL logs."""
    return 100.0 * sum(episode_success(r, task) for r in rollouts) / max(len(rollouts), 1)


def episode_return(rollout: Rollout) -> float:
    return float(np.sum(rollout["rewards"]))


def summarize(rollouts: Sequence[Rollout], task: str) -> dict[str, Any]:
    """Success rate (percent, hand_dapg's rule; 0 for DMC), mean return and per-episode values."""
    returns = [episode_return(r) for r in rollouts]
    return {"success_rate": success_rate(rollouts, task),
            "mean_return": float(np.mean(returns)) if returns else float("nan"),
            "episodes": len(rollouts),
            "per_episode_success": [episode_success(r, task) for r in rollouts],
            "per_episode_return": returns}


class SampledPolicy(Protocol):
    """What a sampler needs of a policy (``policy.GaussianMLPPolicy`` is one), named here so that
    this numpy-only module does not import the torch one: an action width, actions for a batch
    of observations (the mean, or with the caller's standard-normal noise), and a config and
    parameters from which a worker process rebuilds it."""

    act_dim: int

    def act(self, obs: Array, noise: Array | None = None) -> Array: ...

    def config(self) -> dict[str, Any]: ...

    def state_dict(self) -> Any: ...


class Sampler(Protocol):
    """Trajectory i of a call resets with seed ``seed + i`` and draws its action noise from it."""

    def sample(self, policy: SampledPolicy, n_trajectories: int, horizon: int, seed: int,
               deterministic: bool = False) -> list[Rollout]: ...

    def close(self) -> None: ...


def require_finite_returns(summary: dict[str, Any], where: str) -> None:
    """Raise NonFiniteError if a ``summarize`` result holds a NaN or infinite return."""
    bad = [i for i, r in enumerate(summary["per_episode_return"]) if not math.isfinite(r)]
    if bad or not math.isfinite(summary["mean_return"]):
        raise NonFiniteError(
            f"{where}: the returns of episodes {bad} of {summary['episodes']} are NaN or infinite; "
            "nothing was saved. Fix: re-train the policy (FORCE=1 on bc or dapg, with a smaller "
            "bc.lr or dapg.step_size)")
