"""The VAE training loop: seeded, checkpointed every epoch, resumable, verified when written.

Every random draw comes from (seed, epoch): the initial weights from ``seed``, epoch e's shuffle
and reparameterisation noise from generators seeded with (seed, e). A run killed after epoch k
resumes from the checkpoint of epoch k and ends with the same weights as a run never stopped
(on the same machine and thread count).

Written files: ``encoder.safetensors`` (the encoder half: conv stack and mean head, the weights
the ``vae`` encoder loads), ``vae.safetensors`` (the whole VAE, for reconstructions), both with
the architecture in their metadata. The encoder file counts only once it has been reloaded
through the encoder registry and gives the trained encoder's features.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import VAEConfig
from pipeline.encoders.preprocess import normalize_pixels
from pipeline.encoders.vae import VAE, motion_weights
from pipeline.encoders.vae_architecture import VAEArchitecture
from pipeline.errors import NonFiniteError, StoreError, bad_store
from pipeline.fileio import atomic_path, file_sha256
from pipeline.rl.checkpoints import load_checkpoint, save_checkpoint
from pipeline.vae import ENCODER_FILE, VAE_FILE
from pipeline.vae.data import Frames

EVAL_BATCH = 256
VERIFY_FRAMES = 64
History = list[dict[str, Any]]  # per epoch (0: at initialisation): losses and seconds


@dataclass
class TrainedVAE:
    model: VAE
    history: History
    resumed_from: int  # epochs finished before this call (0: trained from scratch)


def as_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> the VAE's input, exactly as the encode stage prepares it."""
    return normalize_pixels(pixels, "none")


def _batch(pixels: torch.Tensor) -> torch.Tensor:
    # channels_last: convolutions and their gradients are ~1.25x faster on the CPU in this layout.
    return as_input(pixels).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def evaluate(model: VAE, frames: Frames, beta: float) -> dict[str, float]:
    """Loss terms on ``frames`` with z at the posterior mean, averaged over frames; unweighted
    (``vae.motion_weight`` shapes training only), so VAEs of any weight compare on one scale."""
    model.eval()
    sums = {"loss": 0.0, "reconstruction": 0.0, "kl": 0.0, "mse": 0.0}
    for start in range(0, len(frames), EVAL_BATCH):
        x = _batch(frames.pixels[start:start + EVAL_BATCH])
        part = model.loss(x, beta)
        for name, value in zip(sums, (part.total, part.reconstruction, part.kl, part.mse), strict=True):
            sums[name] += float(value) * len(x)
    return {name: total / len(frames) for name, total in sums.items()}


def _generator(seed: int, stream: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, epoch])


def _check_finite(value: float, epoch: int, cfg: VAEConfig) -> None:
    if not math.isfinite(value):
        raise NonFiniteError(f"VAE training: the loss became {value} in epoch {epoch} "
                             f"(vae.lr={cfg.lr}, vae.beta={cfg.beta}); nothing was saved for this "
                             "epoch. Fix: lower vae.lr (SET=vae.lr=...) and run again")


def _epoch(model: VAE, optimizer: torch.optim.Optimizer, train: Frames, cfg: VAEConfig,
           epoch: int, advance: Callable[[float], None]) -> float:
    model.train()
    order = torch.from_numpy(_generator(cfg.seed, 1, epoch).permutation(len(train)))
    noise = torch.Generator().manual_seed(int(_generator(cfg.seed, 2, epoch).integers(2**62)))
    previous = torch.from_numpy(train.previous_rows()) if cfg.motion_weight else None
    total = 0.0
    for start in range(0, len(train), cfg.batch_size):
        rows = order[start:start + cfg.batch_size]
        x = _batch(train.pixels[rows])
        weights = None
        if previous is not None:
            weights = motion_weights(x, _batch(train.pixels[previous[rows]]), cfg.motion_weight)
        loss = model.loss(x, cfg.beta, noise, weights)
        value = float(loss.total.detach())
        _check_finite(value, epoch, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        total += value * len(rows)
        advance(value)
    return total / len(train)


def _load_checkpoint(path: Path, tag: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)  # plain data only, checked against its content_sha256
    except StoreError as err:  # a damaged checkpoint only costs the epochs it held
        log(f"[vae] {err}; starting over")
        return None
    if state.get("tag") != tag:
        log(f"[vae] checkpoint {path} belongs to other inputs ({state.get('tag')!r}); starting over")
        return None
    return state


def _save_checkpoint(path: Path, tag: str, model: VAE, optimizer: torch.optim.Optimizer,
                     history: History) -> None:
    # Atomic: a kill mid-write leaves the previous epoch's checkpoint intact.
    save_checkpoint(path, {"tag": tag, "epoch": history[-1]["epoch"], "model": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "history": history})


def train_vae(train: Frames, held: Frames, cfg: VAEConfig, checkpoint: Path, tag: str,
              log: Callable[[str], None] = print, progress: bool = True) -> TrainedVAE:
    """Train (or resume training) for ``cfg.epochs`` epochs; ``tag`` names the inputs, so a
    checkpoint of other inputs is never resumed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = VAE(VAEArchitecture.from_config(cfg)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = _load_checkpoint(checkpoint, tag, log)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history: History = list(state["history"])
        log(f"[vae] resuming from the checkpoint of epoch {history[-1]['epoch']} of {cfg.epochs}")
    else:
        history = [{"epoch": 0, "train_loss": None, "seconds": 0.0,
                    **{f"heldout_{k}": v for k, v in evaluate(model, held, cfg.beta).items()}}]
    done = int(history[-1]["epoch"])
    batches = math.ceil(len(train) / cfg.batch_size)
    with tqdm(total=cfg.epochs * batches, initial=done * batches, unit="batch", desc="vae",
              disable=not progress) as bar:
        def advance(loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.1f}", refresh=False)

        for epoch in range(done + 1, cfg.epochs + 1):
            started = time.perf_counter()
            train_loss = _epoch(model, optimizer, train, cfg, epoch, advance)
            scores = evaluate(model, held, cfg.beta)
            history.append({"epoch": epoch, "train_loss": train_loss,
                            "seconds": time.perf_counter() - started,
                            **{f"heldout_{k}": v for k, v in scores.items()}})
            _save_checkpoint(checkpoint, tag, model, optimizer, history)
            bar.set_description(f"vae (held-out {scores['loss']:.1f})")
    model.eval()
    return TrainedVAE(model, history, done)


def write_weights(model: VAE, out_dir: Path, verify_on: Frames) -> str:
    """Write the encoder and VAE files; return the encoder file's sha256 once it checks out."""
    from safetensors.torch import save_file

    from pipeline.encoders import create_encoder

    for name, module, part in ((VAE_FILE, model, "vae"), (ENCODER_FILE, model.encoder, "encoder")):
        tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        with atomic_path(out_dir / name) as tmp:
            save_file(tensors, str(tmp), metadata=model.arch.metadata(part))
    path = out_dir / ENCODER_FILE
    rows = np.linspace(0, len(verify_on) - 1, min(VERIFY_FRAMES, len(verify_on))).astype(int)
    pixels = verify_on.pixels[torch.from_numpy(rows)]
    with torch.inference_mode():
        expected = model.encoder(_batch(pixels)).numpy()
    loaded = create_encoder("vae", str(path)).encode(pixels.permute(0, 2, 3, 1).numpy())
    # Not bit-equal: training ran channels_last, the encoder runs in the default layout.
    if not np.allclose(loaded, expected, rtol=1e-4, atol=1e-4):
        raise bad_store(str(path), "the written encoder does not reproduce the trained encoder's "
                        f"features (max |diff| {np.abs(loaded - expected).max():.3g})",
                        "run the vae stage again with FORCE=1")
    return file_sha256(path)
