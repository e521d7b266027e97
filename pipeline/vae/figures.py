"""The VAE's figures: loss per epoch (training and held-out) and held-out reconstructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.encoders.vae import VAE
from pipeline.plots import contact_sheet
from pipeline.vae.data import Frames
from pipeline.vae.train import as_input

SHEET_FRAMES = 8


def loss_curve(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Loss per image against epochs: training (mean over the epoch's batches, z sampled) and
    held-out (after the epoch, z at the posterior mean; epoch 0 is the initial model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [h for h in history if h["train_loss"] is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot([h["epoch"] for h in trained], [h["train_loss"] for h in trained], "o-", ms=3,
             label="training")
    ax1.plot([h["epoch"] for h in history], [h["heldout_loss"] for h in history], "s-", ms=3,
             label="held-out episodes")
    ax1.set_yscale("log")
    ax1.set(xlabel="epoch", ylabel="loss per image (SSE + beta KL)")
    ax1.legend()
    ax2.plot([h["epoch"] for h in history], [h["heldout_mse"] for h in history], "s-", ms=3,
             color="C1")
    ax2.set_yscale("log")
    ax2.set(xlabel="epoch", ylabel="held-out MSE per pixel ([0, 1] pixels)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def reconstruction_sheet(model: VAE, held: Frames, path: Path, title: str) -> Path:
    """Held-out frames spread over the held-out episodes, above their reconstructions."""
    rows = np.linspace(0, len(held) - 1, min(SHEET_FRAMES, len(held))).astype(int)
    pixels = held.pixels[torch.from_numpy(rows)]
    with torch.inference_mode():
        recon = model.eval().reconstruct(as_input(pixels))
    as_image = (recon.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    labels = [f"episode {held.episode[r]}, step {held.step[r]}" for r in rows]
    return contact_sheet({
        "held-out frame": list(zip(labels, pixels.permute(0, 2, 3, 1).numpy(), strict=True)),
        "reconstruction": list(zip(labels, as_image, strict=True)),
    }, path, title)
