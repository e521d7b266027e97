"""vae: train the in-domain encoder (a convolutional beta-VAE) on a task's rendered frames.

Its output, ``encoder.safetensors``, is the weights file of the registered ``vae`` encoder:
``make features ENCODER=vae WEIGHTS=<this stage's key, or a 12+ character prefix>`` (the `rrl`
command resolves the key to the file in its data folder) or ``WEIGHTS=<path to the file>``.
Either way the file's sha256 enters the encode key, so two VAEs never share features.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.envs.families import without_demos
from pipeline.fileio import write_json_atomic
from pipeline.runner import Stage, StageContext, StageResult
from pipeline.settings import key_dict
from pipeline.vae import CHECKPOINT, ENCODER_FILE, VAE_FILE

VERSION = "1"
LOSS_CURVE = "loss_curve.png"
RECONSTRUCTIONS = "reconstructions.png"
LOSSES = "losses.json"


def inputs(cfg: PipelineConfig) -> dict[str, Any]:
    return {"vae": key_dict(cfg.vae)}


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    from pipeline.vae.data import load_frames, split_frames
    from pipeline.vae.figures import loss_curve, reconstruction_sheet
    from pipeline.vae.train import train_vae, write_weights

    cfg = ctx.config.vae
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    render = ctx.upstream["render"]
    frames = load_frames(render.out_dir / render.summary["episodes_file"], cfg.input_size)
    train, held, held_episodes = split_frames(frames, cfg.holdout, cfg.seed)
    ctx.log(f"[vae] {len(train)} training and {len(held)} held-out frames "
            f"({cfg.input_size}x{cfg.input_size}, episodes held out: {held_episodes.tolist()})")
    started = time.perf_counter()
    trained = train_vae(train, held, cfg, ctx.out_dir / CHECKPOINT, ctx.key, ctx.log)
    sha256 = write_weights(trained.model, ctx.out_dir, held)
    history = trained.history
    write_json_atomic(ctx.out_dir / LOSSES, history)
    arch = trained.model.arch
    title = (f"{ctx.config.task} VAE: {arch.input_size}x{arch.input_size} RGB, channels "
             f"{'-'.join(map(str, arch.channels))}, latent {arch.latent}, beta {cfg.beta:g}")
    loss_curve(history, ctx.out_dir / LOSS_CURVE, title)
    reconstruction_sheet(trained.model, held, ctx.out_dir / RECONSTRUCTIONS, title)
    (ctx.out_dir / CHECKPOINT).unlink()  # only needed to resume; the weights files are written
    first, last = history[0], history[-1]
    return {
        "architecture": arch.as_dict(), "cameras": list(frames.cameras),
        "train_frames": len(train), "heldout_frames": len(held),
        "heldout_episodes": held_episodes.tolist(), "epochs": cfg.epochs,
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "resumed_from_epoch": trained.resumed_from,
        "seconds_this_run": round(time.perf_counter() - started, 1),
        "initial_heldout_loss": round(first["heldout_loss"], 3),
        "heldout_loss": round(last["heldout_loss"], 3),
        "heldout_mse": round(last["heldout_mse"], 6), "heldout_kl": round(last["heldout_kl"], 3),
        "train_loss": round(last["train_loss"], 3),
        "encoder_file": ENCODER_FILE, "encoder_sha256": sha256, "vae_file": VAE_FILE,
        "losses": LOSSES, "loss_curve": LOSS_CURVE, "reconstructions": RECONSTRUCTIONS,
    }


def describe(result: StageResult) -> str:
    s, out = result.summary, result.out_dir
    a = s["architecture"]
    return "\n".join([
        f"VAE {a['input_size']}x{a['input_size']} RGB, channels "
        f"{'-'.join(map(str, a['channels']))}, latent {a['latent']}: {s['epochs']} epochs on "
        f"{s['train_frames']} frames in {s['train_seconds']} s",
        f"held-out loss {s['initial_heldout_loss']} at initialisation -> {s['heldout_loss']} "
        f"(MSE per pixel {s['heldout_mse']}, KL {s['heldout_kl']}; {s['heldout_frames']} frames "
        f"of episodes {s['heldout_episodes']})",
        f"encoder weights: {out / s['encoder_file']}",
        f"figures: {out / s['loss_curve']}, {out / s['reconstructions']}",
        f"encode with it: make features ENCODER=vae WEIGHTS={result.key[:12]} "
        "(or WEIGHTS=<the weights path>)",
    ])


STAGE = Stage(
    name="vae",
    version=VERSION,
    upstream=("render",),
    inputs=inputs,
    run=run,
    describe=describe,
    not_applicable=without_demos,
)
