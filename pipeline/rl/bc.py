"""Behaviour cloning warm start, as hand_dapg/RRL run mjrl's BC (loss_type="MSE").

Before training, the policy's input normalization is set from the data, its output from the
action mean/std, and its log-std to log(action std) (mjrl's `set_transformations` and
`set_variance_with_data`). The loss is the MSE between the policy mean and the demo action.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.rl.policy import Array, GaussianMLPPolicy, ObsNormalizer, single_thread


def fit_normalization(policy: GaussianMLPPolicy, obs: Array, act: Array,
                      min_std: float = 1e-3) -> None:
    """Set the policy's fixed input/output affine maps and its log-std from demo data."""
    act = np.asarray(act, dtype=np.float64)
    act_std = act.std(axis=0)
    policy.set_normalization(ObsNormalizer.from_data(obs, min_std), act.mean(axis=0), act_std)
    with torch.no_grad():
        policy.log_std.copy_(torch.as_tensor(np.log(act_std + 1e-12), dtype=torch.float32))
        policy.log_std.clamp_(min=policy.min_log_std)


def behaviour_clone(
    policy: GaussianMLPPolicy,
    obs: Array,
    act: Array,
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    set_normalization: bool = True,
) -> list[float]:
    """Fit the policy mean to (obs, act); returns the mean minibatch loss of each epoch."""
    if set_normalization:
        fit_normalization(policy, obs, act)
    x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(act), dtype=torch.float32)
    optimizer = torch.optim.Adam(policy.trainable(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    with single_thread():
        return [_epoch(policy, optimizer, x, y, batch_size, generator) for _ in range(epochs)]


def _epoch(policy: GaussianMLPPolicy, optimizer: torch.optim.Optimizer, x: torch.Tensor,
           y: torch.Tensor, batch_size: int, generator: torch.Generator) -> float:
    """One epoch; returns the mean minibatch loss."""
    n = len(x)
    steps = max(n // batch_size, 1)
    total = 0.0
    for _ in range(steps):
        # mjrl draws each minibatch with replacement, n // batch_size of them per epoch.
        idx = torch.randint(n, (batch_size,), generator=generator)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(policy.mean(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / steps
