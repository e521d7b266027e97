"""State-mode samplers on the shared rollout loop, and evaluation.

``VectorSampler`` steps N envs in this process; ``ProcessSampler`` runs one VectorSampler per
worker process. Both give the same rollouts for the same seeds (see ``pipeline.rl.rollout_loop``
for the seeding). Vision modes use ``pipeline.rl.vision.VisionSampler``, the same loop with the
envs in workers and the frames encoded here.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from pipeline.rl.env_backends import LocalEnvs, env_vector, task_env
from pipeline.rl.policy import GaussianMLPPolicy
from pipeline.rl.rollout_loop import LoopSampler
from pipeline.rl.rollouts import Rollout, SampledPolicy, Sampler, summarize
from pipeline.rl.workers import PipeWorkers


class VectorSampler(LoopSampler):
    """N envs stepped in lockstep in this process; the policy runs once per step on all of them."""

    def __init__(self, task: str, n_envs: int = 8, reward: str = "dense",
                 env_kwargs: dict[str, Any] | None = None) -> None:
        make_env = partial(task_env, task, reward=reward, **(env_kwargs or {}))
        super().__init__(LocalEnvs(make_env, n_envs, env_vector))
        self.task = task


def _worker(conn: Connection, task: str, n_envs: int, reward: str,
            env_kwargs: dict[str, Any]) -> None:
    torch.set_num_threads(1)  # the workers share the machine's few cores
    sampler = VectorSampler(task, n_envs, reward, env_kwargs)
    policy: GaussianMLPPolicy | None = None
    try:
        while (msg := conn.recv()) is not None:
            config, state, ids, horizon, seed, deterministic = msg
            if policy is None or policy.config() != config:
                policy = GaussianMLPPolicy(**config, seed=None)
            policy.load_state_dict(state)
            conn.send(sampler.sample_ids(policy, ids, horizon, seed, deterministic))
    finally:
        sampler.close()
        conn.close()


class ProcessSampler:
    """`workers` processes, each a VectorSampler of `n_envs` envs with its own copy of the policy.

    The policy is shipped once per call (a few hundred kB) instead of observations and actions
    once per step, so the only per-step cost is physics and a small batched MLP.
    """

    def __init__(self, task: str, workers: int = 2, n_envs: int = 4, reward: str = "dense",
                 env_kwargs: dict[str, Any] | None = None) -> None:
        self.task = task
        self.workers = PipeWorkers(_worker, [(task, n_envs, reward, env_kwargs or {})] * workers)

    def sample(self, policy: SampledPolicy, n_trajectories: int, horizon: int, seed: int,
               deterministic: bool = False) -> list[Rollout]:
        chunks: Sequence[np.ndarray] = np.array_split(np.arange(n_trajectories),
                                                      len(self.workers.conns))
        state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        busy = []
        for index, (conn, ids) in enumerate(zip(self.workers.conns, chunks, strict=True)):
            if len(ids):
                conn.send((policy.config(), state, ids.tolist(), horizon, seed, deterministic))
                busy.append(index)
        return [rollout for index in busy for rollout in self.workers.recv(index)]

    def close(self) -> None:
        self.workers.close()

    def __enter__(self) -> ProcessSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate(policy: GaussianMLPPolicy, task: str, episodes: int, seed: int,
             deterministic: bool = True, horizon: int = 200,
             sampler: Sampler | None = None) -> dict[str, Any]:
    """``pipeline.rl.rollouts.summarize`` of `episodes` rollouts (mean action by default)."""
    own = sampler is None
    sampler = VectorSampler(task) if sampler is None else sampler
    try:
        rollouts = sampler.sample(policy, episodes, horizon, seed, deterministic)
    finally:
        if own:
            sampler.close()
    return summarize(rollouts, task)
