"""The one rollout loop, shared by every sampler: N envs in lockstep, one policy call per step.

Trajectory i of a call resets its env with seed ``seed + i`` and draws its action noise from
``default_rng(seed + i)`` (mjrl's ``base_seed + ep``), and any observation noise from
``default_rng([seed + i, 1])``, so a rollout does not depend on how trajectories are spread over
envs, waves or processes. Where the envs live and what the policy sees are the two parts that
vary, and both are arguments:

- an env backend (``EnvBackend``): ``reset(slots, seeds)`` and ``step(slots, actions)`` on a
  fixed number of env slots, in this process or in workers (``pipeline.rl.env_backends``);
- an observation function ``observe(raw observations of all live envs, their noise rngs)``
  that returns the policy inputs of all of them at once: state mode stacks the env vectors,
  vision modes encode every env's frame as one batch (``pipeline.rl.vision``).

``groups=2`` splits a wave's envs into two halves, each observed and acted for as one batch;
``pipelined=True`` then receives a half's step only when its turn comes again, so while the
backend's workers step and render one half, this process observes (encodes) and acts for the
other. Pipelining changes only when work happens, never what is computed: the rollouts are bit
for bit those of the same groups unpipelined. Groups change the batch sizes of the observation
function and the policy, which (where a kernel's rounding depends on the batch) may change last
bits, as the number of envs does.

This module imports neither MuJoCo nor torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from pipeline.rl.rollouts import Array, Rollout, SampledPolicy

Observe = Callable[[Sequence[Any], Sequence[np.random.Generator]], Array]
# Turns one trajectory's raw observations (one per step, before its action) into extra fields.
Record = Callable[[Sequence[Any]], dict[str, Any]]


class EnvBackend(Protocol):
    """``size`` env slots; a raw observation is whatever the backend's envs report per step."""

    size: int

    def reset(self, slots: Sequence[int], seeds: Sequence[int]) -> list[Any]: ...

    def send_step(self, slots: Sequence[int], actions: Array) -> None:
        """Start stepping ``slots``; steps are received in the order they were sent."""
        ...

    def receive_step(self, slots: Sequence[int]
                     ) -> tuple[list[Any], list[float], list[bool], list[bool]]:
        """Raw observations after the step, rewards, the env's per-step success signal, and
        whether the episode ended there before the horizon."""
        ...

    def close(self) -> None: ...


def stacked(raw: Sequence[Any], rngs: Sequence[np.random.Generator]) -> Array:
    """Oracle state mode: the policy sees the env's own observation vector."""
    return np.stack(raw)


def run_rollouts(envs: EnvBackend, observe: Observe, policy: SampledPolicy, ids: Sequence[int],
                 horizon: int, seed: int, deterministic: bool = False,
                 record: Record | None = None, groups: int = 1,
                 pipelined: bool = False) -> list[Rollout]:
    """Rollouts of trajectories `ids`, in waves of ``envs.size``; see the module docstring."""
    out: list[Rollout] = []
    for start in range(0, len(ids), envs.size):
        out += _wave(envs, observe, policy, ids[start:start + envs.size], horizon, seed,
                     deterministic, record, groups, pipelined)
    return out


def split_slots(count: int, groups: int) -> list[list[int]]:
    """Slots ``0..count-1`` as at most ``groups`` contiguous, near-equal, non-empty groups."""
    return [part.tolist() for part in np.array_split(np.arange(count), max(1, min(groups, count)))]


def _wave(envs: EnvBackend, observe: Observe, policy: SampledPolicy, ids: Sequence[int],
          horizon: int, seed: int, deterministic: bool, record: Record | None,
          groups: int, pipelined: bool) -> list[Rollout]:
    seeds = [seed + i for i in ids]
    action_rngs = [np.random.default_rng(s) for s in seeds]
    obs_rngs = [np.random.default_rng([s, 1]) for s in seeds]
    parts = split_slots(len(ids), groups)
    raw = envs.reset(list(range(len(ids))), seeds)
    inputs = [_inputs(observe, [raw[k] for k in part], [obs_rngs[k] for k in part])
              for part in parts]
    steps: list[dict[str, list[Any]]] = [
        {"observations": [], "actions": [], "rewards": [], "success": [], "ended": [], "raw": []}
        for _ in ids
    ]
    for t in range(horizon):
        for g, part in enumerate(parts):
            if t:
                if pipelined:  # this group's step t-1, stepped while the other was observed
                    _receive(envs, part, steps, raw)
                inputs[g] = _inputs(observe, [raw[k] for k in part], [obs_rngs[k] for k in part])
            noise = None if deterministic else np.stack(
                [action_rngs[k].standard_normal(policy.act_dim) for k in part])
            actions = policy.act(inputs[g], noise)
            for row, k in enumerate(part):
                steps[k]["observations"].append(inputs[g][row])
                steps[k]["actions"].append(actions[row])
                if record is not None:
                    steps[k]["raw"].append(raw[k])
            envs.send_step(part, actions)
            if not pipelined:
                _receive(envs, part, steps, raw)
    for part in parts if pipelined else ():  # the last step's; its observations are never used
        _receive(envs, part, steps, raw)
    return [_rollout(s, seed_, record) for s, seed_ in zip(steps, seeds, strict=True)]


def _receive(envs: EnvBackend, part: list[int], steps: list[dict[str, list[Any]]],
             raw: list[Any]) -> None:
    next_raw, rewards, success, ended = envs.receive_step(part)
    for k, obs, reward, ok, end in zip(part, next_raw, rewards, success, ended, strict=True):
        steps[k]["rewards"].append(reward)
        steps[k]["success"].append(ok)
        steps[k]["ended"].append(end)
        raw[k] = obs


def _inputs(observe: Observe, raw: Sequence[Any], rngs: Sequence[np.random.Generator]) -> Array:
    # A copy: a backend may reuse its buffers, the rollout keeps these rows.
    return np.array(observe(raw, rngs), dtype=np.float32)


def _rollout(steps: dict[str, list[Any]], seed: int, record: Record | None) -> Rollout:
    # An episode that ended before the horizon (pen dropped) keeps its steps up to that one, as
    # mjrl's sampler stops there; its env stepped on with the others, and those steps are dropped.
    # Nothing drawn before the end depends on them: each trajectory has its own generators.
    ended = steps["ended"]
    length = ended.index(True) + 1 if True in ended else len(ended)
    rollout: Rollout = {"observations": np.asarray(steps["observations"][:length], dtype=np.float32),
                        "actions": np.asarray(steps["actions"][:length]),
                        "rewards": np.asarray(steps["rewards"][:length], dtype=np.float64),
                        "success": np.asarray(steps["success"][:length], dtype=bool),
                        "terminated": np.asarray(True in ended),
                        "seed": np.asarray(seed)}
    if record is not None:
        rollout.update(record(steps["raw"][:length]))
    return rollout


class LoopSampler:
    """A sampler (``pipeline.rl.rollouts.Sampler``): the rollout loop over one env backend."""

    def __init__(self, envs: EnvBackend, observe: Observe = stacked,
                 record: Record | None = None, groups: int = 1, pipelined: bool = False) -> None:
        self.envs, self.observe, self.record = envs, observe, record
        self.groups, self.pipelined = groups, pipelined

    def sample(self, policy: SampledPolicy, n_trajectories: int, horizon: int, seed: int,
               deterministic: bool = False) -> list[Rollout]:
        return self.sample_ids(policy, range(n_trajectories), horizon, seed, deterministic)

    def sample_ids(self, policy: SampledPolicy, ids: Sequence[int], horizon: int, seed: int,
                   deterministic: bool = False) -> list[Rollout]:
        return run_rollouts(self.envs, self.observe, policy, ids, horizon, seed, deterministic,
                            self.record, self.groups, self.pipelined)

    def close(self) -> None:
        self.envs.close()

    def __enter__(self) -> LoopSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
