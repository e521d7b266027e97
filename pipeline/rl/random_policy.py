"""A seeded uniform random policy: the episodes a task without demonstrations is encoded from.

It plugs into the rollout loop like ``GaussianMLPPolicy`` (``act(obs, noise)``): the loop draws a
trajectory's standard-normal noise from that trajectory's own generator (``default_rng(seed +
i)``), and the standard normal CDF maps each draw to a uniform one, so the actions are uniform
over the box, reproducible from the episode's seed alone, and independent of which envs, waves
or processes the trajectories were spread over. Numpy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.rl.rollouts import Array

_NORMAL_CDF = np.vectorize(lambda z: 0.5 * math.erfc(-z / math.sqrt(2.0)), otypes=[np.float64])


class UniformRandomPolicy:
    """Actions uniform over ``[low, high]^act_dim``, whatever the observation."""

    def __init__(self, obs_dim: int, act_dim: int, low: float = -1.0, high: float = 1.0) -> None:
        if not low < high:
            raise ConfigError(f"UniformRandomPolicy: low={low} must be below high={high}")
        self.obs_dim, self.act_dim, self.low, self.high = obs_dim, act_dim, low, high

    def act(self, obs: Array, noise: Array | None = None) -> Array:
        if noise is None:
            raise ConfigError("a uniform random policy has no mean action to take. Fix: sample it "
                              "with deterministic=False (the rollouts stage does for POLICY=random)")
        noise = np.asarray(noise, dtype=np.float64)
        if noise.shape != (len(obs), self.act_dim):
            raise ConfigError(f"UniformRandomPolicy: noise of shape {noise.shape}, expected "
                              f"({len(obs)}, {self.act_dim})")
        return self.low + (self.high - self.low) * _NORMAL_CDF(noise)

    def config(self) -> dict[str, Any]:
        return {"kind": "uniform_random", "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "low": self.low, "high": self.high}
