"""RAD's networks: the pixel encoder, the squashed-Gaussian actor and the twin Q critic.

Follows the reference code of RAD (Laskin et al., "Reinforcement Learning with Augmented Data",
NeurIPS 2020; github.com/MishaLaskin/rad): ``encoder.py`` (``PixelEncoder``: 3x3 convolutions, the
first with stride 2, no padding; a linear layer and LayerNorm, whose output the actor and critic
take as it is) and ``curl_sac.py`` (``Actor``, ``Critic``, ``QFunction``, ``weight_init``,
``gaussian_logprob``, ``squash``).

One difference of layout, none of arithmetic: RAD builds an encoder inside the actor and ties its
convolutions to the critic's. Here the convolutions live once, in the critic's encoder, and the
actor holds only its own linear layer and LayerNorm (``ActorHead``), fed the convolutions'
output; the actor's optimizer therefore never sees them, as in RAD, where the actor's loss is
stopped before them. The encoder runs channels-last (1.4x faster on CPU here, in training and
as a frozen encoder alike, so both compute the same features).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.encoders.rad_architecture import RADArchitecture
from pipeline.errors import invalid_value

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0  # RAD's actor_log_std_min / max


def init_weights(module: nn.Module) -> None:
    """RAD's ``weight_init``: orthogonal linear layers; convolutions delta-orthogonal (only the
    kernel's centre tap is set, orthogonal with the ReLU gain), biases zero."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        assert module.bias is not None  # RAD's convolutions have biases
        with torch.no_grad():
            module.weight.zero_()
            module.bias.zero_()
            mid = module.weight.shape[2] // 2
            nn.init.orthogonal_(module.weight[:, :, mid, mid], nn.init.calculate_gain("relu"))


def conv_stack(arch: RADArchitecture) -> nn.Sequential:
    layers: list[nn.Module] = []
    before = arch.channels
    for i in range(arch.conv_layers):
        layers += [nn.Conv2d(before, arch.filters, 3, stride=2 if i == 0 else 1), nn.ReLU()]
        before = arch.filters
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


class RADEncoder(nn.Module):
    """Stacked frames in [0, 1], (N, 3 * frame_stack, crop, crop) -> features (N, feature_dim).

    The frozen encoder registered as ``rad`` is this module with the trained actor's weights:
    the critic's convolutions (which the actor shares) and the actor's linear layer and LayerNorm.
    """

    def __init__(self, arch: RADArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.convs = conv_stack(arch)
        self.fc = nn.Linear(arch.flat_features, arch.feature_dim)
        self.ln = nn.LayerNorm(arch.feature_dim)

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        a = self.arch
        if tuple(x.shape[1:]) != (a.channels, a.crop, a.crop):
            raise invalid_value("RAD encoder input", f"a batch of shape {tuple(x.shape)}",
                                f"(N, {a.channels}, {a.crop}, {a.crop}): {a.frame_stack} stacked "
                                "RGB frames in [0, 1]")
        out: torch.Tensor = self.convs(x.contiguous(memory_format=torch.channels_last))
        return out.flatten(1)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.ln(self.fc(h))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_features(x))


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


class ActorHead(nn.Module):
    """The actor after the shared convolutions: linear + LayerNorm (its encoder head), then an MLP
    giving the mean and log-std of a Gaussian squashed by tanh into [-1, 1]."""

    def __init__(self, arch: RADArchitecture, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(arch.flat_features, arch.feature_dim)
        self.ln = nn.LayerNorm(arch.feature_dim)
        self.trunk = mlp(arch.feature_dim, hidden, 2 * act_dim)
        self.apply(init_weights)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.ln(self.fc(h))
        return out

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """(tanh(mean), sampled action, its log-probability, log-std); with no generator only
        the mean is computed (the two middle entries are None)."""
        mu, log_std = self.trunk(self.features(h)).chunk(2, dim=-1)
        # RAD bounds the log-std smoothly: tanh, then rescaled into [LOG_STD_MIN, LOG_STD_MAX].
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        if generator is None:
            return torch.tanh(mu), None, None, log_std
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        pi = mu + noise * log_std.exp()
        log_pi = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True)
        log_pi = log_pi - 0.5 * math.log(2 * math.pi) * mu.shape[-1]
        pi = torch.tanh(pi)
        # The change of variables through tanh (SAC, Haarnoja et al. 2018, appendix C).
        log_pi = log_pi - torch.log(torch.relu(1 - pi.pow(2)) + 1e-6).sum(-1, keepdim=True)
        return torch.tanh(mu), pi, log_pi, log_std


class Critic(nn.Module):
    """The encoder (convolutions + linear + LayerNorm) and two Q-functions of (feature, action)."""

    def __init__(self, arch: RADArchitecture, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.encoder = RADEncoder(arch)
        self.q1 = mlp(arch.feature_dim + act_dim, hidden, 1)
        self.q2 = mlp(arch.feature_dim + act_dim, hidden, 1)
        self.apply(init_weights)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q1 and Q2 of the convolutions' output ``h`` (see ``RADEncoder.conv_features``)."""
        x = torch.cat([self.encoder.head(h), action], dim=1)
        return self.q1(x), self.q2(x)


def soft_update(source: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- tau * source + (1 - tau) * target, parameter by parameter."""
    with torch.no_grad():
        for s, t in zip(source.parameters(), target.parameters(), strict=True):
            t.mul_(1 - tau).add_(s, alpha=tau)
