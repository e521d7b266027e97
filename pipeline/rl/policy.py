"""Gaussian MLP policy, fixed input/output normalization and the MLP value baseline (as mjrl).

The policy follows mjrl's `policies/gaussian_mlp.MLP` with hand_dapg's set-up: inputs are shifted and
scaled by the demonstration statistics, outputs are un-scaled by the demonstration action statistics
(`set_transformations`), and the state-independent log-std starts at log(action std)
(`set_variance_with_data`, done by `pipeline.rl.bc`). Everything runs in float32, as mjrl.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.rl.rollouts import Array


class ObsNormalizer(nn.Module):
    """A fixed affine map x -> (x - mean) / std, stored with the policy so checkpoints carry it."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Array | torch.Tensor, std: Array | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())

    @classmethod
    def from_data(cls, x: Array, min_std: float = 1e-3) -> ObsNormalizer:
        # mjrl divides by (std + 1e-8); a floor keeps a feature that is constant in the demos
        # (a dead ResNet channel) from being multiplied by 1e8 when it moves during RL.
        x = np.asarray(x, dtype=np.float64)
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), min_std))

    @classmethod
    def identity(cls, dim: int) -> ObsNormalizer:
        return cls(np.zeros(dim), np.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


@contextlib.contextmanager
def _seeded_init(seed: int | None) -> Iterator[None]:
    """nn.Linear's default init drawn from `seed`, leaving the global torch RNG untouched."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored after).

    Minibatches of 32-64 rows are too small to share between threads, and on a busy 2-core
    machine the second thread mostly waits: a 20k-sample baseline fit took 58-77 s with 2 threads
    against 1.4 s with 1 while another job was running.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class GaussianMLPPolicy(nn.Module):
    """pi(a|o) = N(mu(o), diag(exp(log_std))^2), mu = MLP(normalize(o)) * act_scale + act_shift."""

    act_shift: torch.Tensor
    act_scale: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        init_log_std: float = 0.0,
        min_log_std: float = -3.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.min_log_std = obs_dim, act_dim, min_log_std
        self.hidden = tuple(hidden)
        with _seeded_init(seed):
            self.net = mlp((obs_dim, *self.hidden, act_dim), nn.Tanh)
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():  # mjrl scales both weight and bias of the last layer
            last.weight.mul_(1e-2)
            last.bias.mul_(1e-2)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        self.obs_norm = ObsNormalizer.identity(obs_dim)
        self.register_buffer("act_shift", torch.zeros(act_dim))
        self.register_buffer("act_scale", torch.ones(act_dim))

    # --- normalization ------------------------------------------------------------------------
    def set_normalization(
        self, obs_norm: ObsNormalizer, act_shift: Array | None = None, act_scale: Array | None = None
    ) -> None:
        self.obs_norm = obs_norm
        if act_shift is not None:
            self.act_shift.copy_(torch.as_tensor(act_shift, dtype=torch.float32))
        if act_scale is not None:
            self.act_scale.copy_(torch.as_tensor(act_scale, dtype=torch.float32))

    # --- distribution -------------------------------------------------------------------------
    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.obs_norm(obs)) * self.act_scale + self.act_shift

    def log_likelihood(
        self, obs: torch.Tensor, act: torch.Tensor, mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        mean = self.mean(obs) if mean is None else mean
        z = (act - mean) / torch.exp(self.log_std)
        return (-0.5 * (z**2).sum(dim=1) - self.log_std.sum()
                - 0.5 * self.act_dim * float(np.log(2 * np.pi)))

    def mean_kl(
        self, old_mean: torch.Tensor, old_log_std: torch.Tensor, obs: torch.Tensor
    ) -> torch.Tensor:
        """Mean over `obs` of KL(old || current), with mjrl's formula (its 1e-8 included)."""
        new_mean, new_log_std = self.mean(obs), self.log_std
        old_var, new_var = torch.exp(2 * old_log_std), torch.exp(2 * new_log_std)
        num = (old_mean - new_mean) ** 2 + old_var - new_var
        kl = (num / (2 * new_var + 1e-8) + new_log_std - old_log_std).sum(dim=1)
        return kl.mean()

    @torch.no_grad()
    def act(self, obs: Array, noise: Array | None = None) -> Array:
        """Actions for a batch of observations: the mean, plus exp(log_std) * noise if given.

        The caller draws the standard-normal noise (one generator per trajectory), so that a
        trajectory's actions do not depend on which other trajectories share its batch.
        """
        mean = self.mean(torch.as_tensor(obs, dtype=torch.float32)).double().numpy()
        if noise is None:
            return mean
        return mean + np.exp(self.log_std.detach().double().numpy()) * noise

    # --- flat parameters (NPG works on one vector) ----------------------------------------------
    def trainable(self) -> list[nn.Parameter]:
        return [*self.net.parameters(), self.log_std]

    def get_flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.trainable()])

    def set_flat(self, flat: torch.Tensor) -> None:
        i = 0
        with torch.no_grad():
            for p in self.trainable():
                n = p.numel()
                p.copy_(flat[i:i + n].view_as(p).to(p.dtype))
                i += n
            self.log_std.clamp_(min=self.min_log_std)

    def config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden": list(self.hidden),
                "min_log_std": self.min_log_std}


class MLPBaseline:
    """Value function V(o, t) as mjrl's MLPBaseline: ReLU MLP on [clip(o,-10,10)/10, (t/1000)^1..4].

    Fitted on Monte-Carlo returns with Adam (weight decay 1e-3 as hand_dapg), minibatch 64, a few
    epochs. Its shuffling uses its own generator so that a checkpoint can restore it exactly.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int] = (128, 128),
        lr: float = 1e-3,
        batch_size: int = 64,
        epochs: int = 2,
        weight_decay: float = 1e-3,
        seed: int = 0,
    ) -> None:
        self.obs_dim, self.batch_size, self.epochs = obs_dim, batch_size, epochs
        with _seeded_init(seed):
            self.model = mlp((obs_dim + 4, *hidden, 1), nn.ReLU)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.generator = torch.Generator().manual_seed(seed)

    def features(self, observations: Sequence[Array]) -> torch.Tensor:
        """Features for whole trajectories: time restarts at 0 for each array in the list."""
        parts = []
        for obs in observations:
            o = np.clip(np.asarray(obs, dtype=np.float64).reshape(len(obs), -1), -10, 10) / 10.0
            t = np.arange(len(o))[:, None] / 1000.0
            parts.append(np.concatenate([o, t, t**2, t**3, t**4], axis=1))
        return torch.as_tensor(np.concatenate(parts), dtype=torch.float32)

    @torch.no_grad()
    def predict(self, observations: Array) -> Array:
        return self.model(self.features([observations])).double().numpy().ravel()

    def fit(self, observations: Sequence[Array], returns: Sequence[Array]) -> tuple[float, float]:
        """Regress returns; gives mjrl's relative errors sum(err^2)/sum(ret^2) before and after."""
        x = self.features(observations)
        y = torch.as_tensor(np.concatenate(returns), dtype=torch.float32).reshape(-1, 1)
        before = self._relative_error(x, y)
        n = len(x)
        with single_thread():
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=self.generator)
                # mjrl's fit_data runs n // batch - 1 minibatches per epoch (drops the tail).
                for b in range(n // self.batch_size - 1):
                    idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                    self.optimizer.zero_grad()
                    loss = nn.functional.mse_loss(self.model(x[idx]), y[idx])
                    loss.backward()
                    self.optimizer.step()
        return before, self._relative_error(x, y)

    @torch.no_grad()
    def _relative_error(self, x: torch.Tensor, y: torch.Tensor) -> float:
        err = (y - self.model(x)).double()
        return float((err**2).sum() / ((y.double() ** 2).sum() + 1e-8))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
