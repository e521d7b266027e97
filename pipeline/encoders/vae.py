"""A convolutional beta-VAE on rendered frames: the paper's in-domain encoder ablation.

Architecture (``VAEArchitecture``; defaults from ``VAEConfig``: 64x64 RGB, channels 32-64-128-256,
a 64-d latent):

- encoder: per channel count c, ``Conv2d(k=4, stride=2, padding=1)`` to c channels and ReLU, so
  64x64 becomes 4x4x256 (84x84: 5x5x256); flattened, then two linear heads give the posterior
  mean and log-variance of the latent. ``VAEEncoder`` is the conv stack plus the mean head: the
  frozen feature extractor registered as ``vae`` (its feature is the posterior mean).
- decoder, the mirror: a linear layer and ReLU back to the last conv's shape, then
  ``ConvTranspose2d(k=4, stride=2, padding=1)`` per conv in reverse order (``output_padding``
  restores odd sizes such as 21 in 84-10-21-42-84), ReLU between, a sigmoid at the end.
- input: pixels / 255 in [0, 1] (``normalize="none"``), resized and cropped like every encoder's
  input (pipeline/encoders/preprocess.py), so training and encoding see the same tensors.

Loss per image, averaged over the batch: the summed squared error of the reconstruction (the
negative log-likelihood of a Gaussian decoder with variance 1/2, up to a constant) plus ``beta``
times the KL divergence of the diagonal Gaussian posterior from N(0, I), summed over the latent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.encoders.vae_architecture import VAEArchitecture, read_architecture
from pipeline.errors import invalid_value


def _convs(arch: VAEArchitecture) -> nn.Sequential:
    layers: list[nn.Module] = []
    before = 3
    for width in arch.channels:
        layers += [nn.Conv2d(before, width, 4, stride=2, padding=1), nn.ReLU()]
        before = width
    return nn.Sequential(*layers)


class VAEEncoder(nn.Module):
    """Frames in [0, 1], (N, 3, S, S) -> posterior mean (N, latent)."""

    def __init__(self, arch: VAEArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.convs = _convs(arch)
        self.mean = nn.Linear(arch.flat_features, arch.latent)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        size = self.arch.input_size
        if tuple(x.shape[1:]) != (3, size, size):
            raise invalid_value("VAE input", f"a batch of shape {tuple(x.shape)}",
                                f"(N, 3, {size}, {size}) frames in [0, 1]")
        return self.convs(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.mean(self.trunk(x))
        return out


class VAEDecoder(nn.Module):
    """Latent (N, latent) -> frames in [0, 1], (N, 3, S, S)."""

    def __init__(self, arch: VAEArchitecture) -> None:
        super().__init__()
        sizes = arch.spatial_sizes()
        self.shape = (arch.channels[-1], sizes[-1], sizes[-1])
        self.project = nn.Sequential(nn.Linear(arch.latent, arch.flat_features), nn.ReLU())
        widths = [3, *arch.channels]
        layers: list[nn.Module] = []
        for i in range(len(arch.channels), 0, -1):
            # A transposed conv doubles the side; output_padding adds back what flooring lost.
            extra = sizes[i - 1] - 2 * sizes[i]
            layers.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 4, stride=2, padding=1,
                                             output_padding=extra))
            layers.append(nn.ReLU() if i > 1 else nn.Sigmoid())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.deconvs(self.project(z).view(-1, *self.shape))
        return out


@dataclass(frozen=True)
class VAELoss:
    total: torch.Tensor  # reconstruction + beta * kl, mean over the batch
    reconstruction: torch.Tensor  # summed squared error per image, mean over the batch
    kl: torch.Tensor  # per image, mean over the batch
    mse: torch.Tensor  # per pixel and channel


class VAE(nn.Module):
    """The encoder (conv stack and mean head), a log-variance head and the decoder."""

    def __init__(self, arch: VAEArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = VAEEncoder(arch)
        self.log_var = nn.Linear(arch.flat_features, arch.latent)
        self.decoder = VAEDecoder(arch)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z | x)."""
        hidden = self.encoder.trunk(x)
        return self.encoder.mean(hidden), self.log_var(hidden)

    def loss(self, x: torch.Tensor, beta: float, generator: torch.Generator | None = None,
             pixel_weights: torch.Tensor | None = None) -> VAELoss:
        """The beta-VAE loss on ``x``; with a generator z is sampled, else z is the mean.
        ``pixel_weights`` (N, 1, S, S) scale each pixel's squared error in the reconstruction
        term (``motion_weights``); the reported MSE stays unweighted."""
        mean, log_var = self.posterior(x)
        z = mean
        if generator is not None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            z = mean + noise * torch.exp(0.5 * log_var)
        recon = self.decoder(z)
        squared = (recon - x).pow(2)
        weighted = squared if pixel_weights is None else squared * pixel_weights
        reconstruction = weighted.flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(1)).mean()
        return VAELoss(reconstruction + beta * kl, reconstruction, kl, squared.mean())

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded posterior means."""
        out: torch.Tensor = self.decoder(self.posterior(x)[0])
        return out


# A pixel moved if a channel changed by more than this (inputs in [0, 1]; static pixels of a
# re-rendered scene change by 0) ...
MOTION_THRESHOLD = 4 / 255
# ... and the moved area grows by this many pixels on each side, to cover a moving part's inside
# (its edges are what change between two frames).
MOTION_GROW = 2


def motion_weights(x: torch.Tensor, before: torch.Tensor, strength: float) -> torch.Tensor:
    """(N, 1, S, S) weights: 1 + ``strength`` where frame ``x`` differs from ``before`` (the
    episode's previous frame), 1 elsewhere."""
    moved = ((x - before).abs().amax(1, keepdim=True) > MOTION_THRESHOLD).to(x.dtype)
    side = 2 * MOTION_GROW + 1
    moved = F.max_pool2d(moved, side, stride=1, padding=MOTION_GROW)
    return 1 + strength * moved


def load_vae(path: Path) -> VAE:
    """The full VAE from the ``vae.safetensors`` file the vae stage writes."""
    from safetensors.torch import load_file

    model = VAE(read_architecture(path, part="vae"))
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.eval()
