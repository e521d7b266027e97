"""Envs under visual distractors whose scene follows the reset seed, and a rendering sampler for
state policies.

Episode i of a rollout call resets with seed ``seed + i`` (``pipeline.rl.rollout_loop``);
``DistractedEnv`` at level L shows that episode in the scene ``DistractorSpec(L, seed + i)``, so
every episode is its own seeded scene and the same episode at two levels starts from the same
state. Distractors only change what is rendered (``pipeline.envs.distractors``), so a state
policy's rollouts are the same at every level while their frames differ.

A scene is part of the compiled model, so a new seed means a new AdroitEnv: the wrapper rebuilds
it at reset when the scene changes (level 0 never does). Nothing here imports MuJoCo; the env
module is imported in whichever process makes the first env.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.envs.distractors import DistractorSpec
from pipeline.errors import ConfigError
from pipeline.rl.env_backends import WorkerEnvs, recorded_view, task_env
from pipeline.rl.rollout_loop import LoopSampler
from pipeline.rl.rollouts import Array
from pipeline.rl.vision import recorded_arrays

if TYPE_CHECKING:
    from pipeline.envs.distractors import DistractorSpec


def scene(level: int, seed: int | None) -> DistractorSpec | None:
    """The distractors of the episode reset with `seed` at `level` (None at level 0: no change)."""
    if level == 0:
        return None
    if seed is None:
        raise ConfigError(f"distractor level {level} needs a reset seed to choose the scene. "
                          "Fix: reset the env with seed=<int>")
    return DistractorSpec(level, seed)


class DistractedEnv:
    """The task's env (sampling settings: ``task_env``) rebuilt at reset when its scene changes
    (Adroit only: DeepMind Control tasks have no distractors, level 0 never rebuilds)."""

    def __init__(self, task: str, level: int, **env_kwargs: Any) -> None:
        scene(level, 0)  # a bad level fails here, in the process that asked for it
        self.task, self.level, self.env_kwargs = task, level, env_kwargs
        self.env: Any = None
        self.spec: DistractorSpec | None = None
        self.rebuilds = 0

    def reset(self, seed: int | None = None) -> Array:
        spec = scene(self.level, seed)
        if self.env is None or spec != self.spec:
            if self.env is not None:
                self.env.close()
            self.env = task_env(self.task, distractors=spec, **self.env_kwargs)
            self.spec = spec
            self.rebuilds += 1
        return np.asarray(self.env.reset(seed=seed))

    def step(self, action: Array) -> tuple[Array, float, bool, dict[str, Any]]:
        return self._env().step(action)

    def _env(self) -> Any:
        if self.env is None:
            raise ConfigError("DistractedEnv was stepped before its first reset. Fix: call "
                              "reset(seed=...) first")
        return self.env

    @property
    def data(self) -> Any:
        return self._env().data

    @property
    def model(self) -> Any:
        return self._env().model

    def observation(self) -> Array:
        return np.asarray(self._env().observation())

    def proprio(self) -> Array:
        return np.asarray(self._env().proprio())

    def render_all(self) -> dict[str, Array]:
        return dict(self._env().render_all())

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def distracted_env(task: str, level: int = 0, **env_kwargs: Any) -> DistractedEnv:
    """A picklable env factory with ``task_env``'s signature (workers call it to make envs)."""
    return DistractedEnv(task, level, **env_kwargs)


def env_factory(level: int) -> Callable[..., DistractedEnv]:
    """``distracted_env`` at `level`, for samplers that take a ``task_env``-like factory."""
    return partial(distracted_env, level=level)


def state_recorded_view(env: Any, obs: Array) -> dict[str, Any]:
    """``recorded_view`` plus the observation the env returned, which a state policy reads.

    Not the recorded ``obs``: that one is recomputed after the frame's ``mj_kinematics`` (it
    matches the frame), while the step's own has site positions from before the last physics
    substep, as in training.
    """
    return {**recorded_view(env, obs), "policy_obs": np.asarray(obs)}


def state_inputs(raw: Sequence[dict[str, Any]], rngs: Sequence[np.random.Generator]) -> Array:
    """Observation function of a state policy fed ``state_recorded_view``s."""
    return np.stack([r["policy_obs"] for r in raw])


class RenderingStateSampler(LoopSampler):
    """A state policy's rollouts with every step rendered and recorded (``recorded_arrays``) from
    `cameras`, as a vision policy's recording sampler does; the policy reads the state vector."""

    def __init__(self, task: str, level: int, cameras: tuple[str, ...], n_envs: int = 8,
                 workers: int = 2, reward: str = "dense", width: int = 256, height: int = 256,
                 shadows: bool = False) -> None:
        make_env = partial(distracted_env, task, level=level, reward=reward, cameras=cameras,
                           width=width, height=height, shadows=shadows)
        self.backend = WorkerEnvs(make_env, n_envs, workers, state_recorded_view)
        super().__init__(self.backend, state_inputs, recorded_arrays)
        self.task = task
