"""Rollout samplers behind one small interface, success as hand_dapg counts it, and evaluation.

A sampler turns (policy, number of trajectories, horizon, seed) into a list of paths. A path is a
dict of arrays: ``observations`` (T, D) policy inputs, ``actions`` (T, A), ``rewards`` (T,),
``success`` (T,) the env's per-step success signal, ``terminated`` () whether the episode ended
for real (False for a horizon cut: the value is then bootstrapped).

Trajectory i of a call uses seed ``seed + i`` for both the env's reset and its action noise
(mjrl's ``base_seed + ep``), so a path does not depend on how trajectories are spread over
envs or processes. What the policy sees is decided by an observation function
``obs_fn(envs, raw_obs) -> inputs``, called once per step on all live envs together: state mode
passes the env observation through; a vision mode renders the envs and encodes the frames as one
batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.envs.adroit import AdroitEnv
from pipeline.rl.policy import Array, GaussianMLPPolicy
from pipeline.rl.workers import PipeWorkers

Path = dict[str, Array]
ObsFn = Callable[[Sequence[AdroitEnv], Array], Array]

# hand_dapg's evaluate_success: an episode succeeds if the goal holds for more than this many steps.
SUCCESS_STEPS = {"door": 25, "hammer": 25, "relocate": 25, "pen": 20}


def episode_success(path: Path, task: str) -> bool:
    return int(np.sum(path["success"])) > SUCCESS_STEPS[task]


def success_rate(paths: Sequence[Path], task: str) -> float:
    """Percentage of successful paths, as the `success_rate` column of mjrl/RRL logs."""
    return 100.0 * sum(episode_success(p, task) for p in paths) / max(len(paths), 1)


def state_obs(envs: Sequence[AdroitEnv], raw: Array) -> Array:
    """Oracle state mode: the policy sees the env's own observation vector."""
    return raw


class Sampler(Protocol):
    def sample(self, policy: GaussianMLPPolicy, n_trajectories: int, horizon: int, seed: int,
               deterministic: bool = False) -> list[Path]: ...

    def close(self) -> None: ...


class VectorSampler:
    """N envs stepped in lockstep in this process; the policy runs once per step on all of them."""

    def __init__(self, task: str, n_envs: int = 8, reward: str = "dense",
                 obs_fn: ObsFn = state_obs, env_kwargs: dict[str, Any] | None = None) -> None:
        self.task, self.n_envs, self.reward, self.obs_fn = task, n_envs, reward, obs_fn
        self.env_kwargs = env_kwargs or {}
        self.envs: list[AdroitEnv] = []

    def _make_envs(self, n: int) -> list[AdroitEnv]:
        while len(self.envs) < n:
            # The sampler owns the horizon; the env's own limit must never cut a path short.
            self.envs.append(AdroitEnv(self.task, reward=self.reward, horizon=10**9,
                                       **self.env_kwargs))
        return self.envs[:n]

    def sample(self, policy: GaussianMLPPolicy, n_trajectories: int, horizon: int, seed: int,
               deterministic: bool = False) -> list[Path]:
        return self.sample_ids(policy, list(range(n_trajectories)), horizon, seed, deterministic)

    def sample_ids(self, policy: GaussianMLPPolicy, ids: Sequence[int], horizon: int, seed: int,
                   deterministic: bool = False) -> list[Path]:
        paths: list[Path] = []
        for start in range(0, len(ids), self.n_envs):
            paths += self._wave(policy, ids[start:start + self.n_envs], horizon, seed,
                                deterministic)
        return paths

    def _wave(self, policy: GaussianMLPPolicy, ids: Sequence[int], horizon: int, seed: int,
              deterministic: bool) -> list[Path]:
        envs = self._make_envs(len(ids))
        rngs = [np.random.default_rng(seed + i) for i in ids]
        raw = np.stack([env.reset(seed=seed + i) for env, i in zip(envs, ids, strict=True)])
        obs = self._inputs(envs, raw)
        rec: list[dict[str, list[Any]]] = [
            {"observations": [], "actions": [], "rewards": [], "success": []} for _ in ids
        ]
        for _ in range(horizon):
            noise = None if deterministic else np.stack(
                [rng.standard_normal(policy.act_dim) for rng in rngs])
            actions = policy.act(obs, noise)
            for k, env in enumerate(envs):
                raw[k], reward, _, info = env.step(actions[k])
                r = rec[k]
                r["observations"].append(obs[k])
                r["actions"].append(actions[k])
                r["rewards"].append(reward)
                r["success"].append(bool(info.get("success", False)))
            obs = self._inputs(envs, raw)
        # AdroitEnv never ends an episode early (gymnasium-robotics v1 never terminates), so
        # every path is a horizon cut.
        return [{"observations": np.asarray(r["observations"], dtype=np.float32),
                 "actions": np.asarray(r["actions"]),
                 "rewards": np.asarray(r["rewards"], dtype=np.float64),
                 "success": np.asarray(r["success"], dtype=bool),
                 "terminated": np.asarray(False)} for r in rec]

    def _inputs(self, envs: Sequence[AdroitEnv], raw: Array) -> Array:
        # A copy: `raw` is overwritten in place on the next step, the path keeps these rows.
        return np.array(self.obs_fn(envs, raw), dtype=np.float32)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


def _worker(conn: Connection, task: str, n_envs: int, reward: str, obs_fn: ObsFn,
            env_kwargs: dict[str, Any]) -> None:
    torch.set_num_threads(1)  # the workers share the machine's few cores
    sampler = VectorSampler(task, n_envs, reward, obs_fn, env_kwargs)
    policy: GaussianMLPPolicy | None = None
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
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
                 obs_fn: ObsFn = state_obs, env_kwargs: dict[str, Any] | None = None) -> None:
        self.task = task
        self.workers = PipeWorkers(_worker, [(task, n_envs, reward, obs_fn, env_kwargs or {})] * workers)
        self.conns = self.workers.conns

    def sample(self, policy: GaussianMLPPolicy, n_trajectories: int, horizon: int, seed: int,
               deterministic: bool = False) -> list[Path]:
        chunks = np.array_split(np.arange(n_trajectories), len(self.conns))
        state = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        busy = []
        for conn, ids in zip(self.conns, chunks, strict=True):
            if len(ids):
                conn.send((policy.config(), state, ids.tolist(), horizon, seed, deterministic))
                busy.append(conn)
        return [path for conn in busy for path in conn.recv()]

    def close(self) -> None:
        self.workers.close()

    def __enter__(self) -> ProcessSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate(policy: GaussianMLPPolicy, task: str, episodes: int, seed: int,
             deterministic: bool = True, horizon: int = 200,
             sampler: Sampler | None = None) -> dict[str, float]:
    """Success rate (percent, hand_dapg's rule) and mean return of `episodes` rollouts."""
    own = sampler is None
    sampler = VectorSampler(task) if sampler is None else sampler
    try:
        paths = sampler.sample(policy, episodes, horizon, seed, deterministic)
    finally:
        if own:
            sampler.close()
    return {"success_rate": success_rate(paths, task),
            "mean_return": float(np.mean([p["rewards"].sum() for p in paths]))}
