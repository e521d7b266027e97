"""Training the in-domain VAE encoder (the vae stage's work): frames, training loop, figures.

``data`` reads a task's rendered frames and splits them by whole episodes; ``train`` runs the
seeded, resumable training loop and writes the weights; ``figures`` draws the loss curve and the
reconstruction sheet. The model itself is ``pipeline.encoders.vae``.
"""

from __future__ import annotations

# Files of a vae output folder.
ENCODER_FILE = "encoder.safetensors"  # the encoder half: what WEIGHTS= points the `vae` encoder at
VAE_FILE = "vae.safetensors"  # the whole VAE, for reconstructions
CHECKPOINT = "checkpoint.pt"  # model and optimiser after the last finished epoch; gone when done
