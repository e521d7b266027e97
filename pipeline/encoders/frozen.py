"""FrozenEncoder: a frozen model plus its preprocessing, frames in, features out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.devices import fp32_exact, resolve_device
from pipeline.encoders.loading import build_module
from pipeline.encoders.preprocess import preprocess, preprocessing_description
from pipeline.encoders.registry import encoder_spec, input_size
from pipeline.errors import invalid_value, unknown_name

PRECISIONS = ("fp32", "bf16")


class FrozenEncoder:
    """Eval-mode, gradient-free model whose output is the global-average-pooled feature vector."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        feature_dim: int,
        weights: dict[str, str],
        precision: str,
        resize: int,
        crop: int,
        device: torch.device,
        normalize: str = "imagenet",
        frame_stack: int = 1,
    ) -> None:
        self.name = name
        self.module = module
        self.feature_dim = feature_dim
        self.weights = weights
        self.precision = precision
        self.resize = resize
        self.crop = crop
        self.device = device
        self.normalize = normalize
        self.frame_stack = frame_stack  # frames per input, stacked along the channels
        self.preprocessing: dict[str, Any] = preprocessing_description(resize, crop, normalize)

    def __repr__(self) -> str:
        return (
            f"FrozenEncoder({self.name!r}, weights={self.weights['kind']}, "
            f"precision={self.precision}, dim={self.feature_dim}, device={self.device})"
        )

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def forward_preprocessed(self, x: torch.Tensor) -> torch.Tensor:
        """Model forward on an already preprocessed float batch (N, 3, crop, crop) -> (N, D)."""
        x = x.to(self.device)
        if self.precision == "bf16":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._precision():
            out: torch.Tensor = self.module(x)
        return out.float()

    def encode(self, frames: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """uint8 frames (N, H, W, 3) -> float32 features (N, feature_dim), `batch_size` at once.

        An encoder of stacked frames (``frame_stack`` k > 1) takes (N, H, W, 3k): each row k
        consecutive RGB frames, oldest first (``pipeline.encoders.framestack``)."""
        channels = 3 * self.frame_stack
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != channels:
            raise invalid_value(
                "frames", f"array of dtype {frames.dtype} and shape {frames.shape}",
                f"uint8 frames of shape (N, H, W, {channels})"
                + (f": {self.frame_stack} stacked RGB frames" if self.frame_stack > 1 else ""),
            )
        if batch_size is not None and batch_size <= 0:
            raise invalid_value("batch_size", batch_size, "a positive integer or None")
        count = frames.shape[0]
        out = np.empty((count, self.feature_dim), dtype=np.float32)
        step = batch_size or max(count, 1)
        with torch.inference_mode():
            for start in range(0, count, step):
                chunk = np.ascontiguousarray(frames[start : start + step])
                if not chunk.flags.writeable:  # torch warns on read-only numpy memory
                    chunk = chunk.copy()
                x = preprocess(torch.from_numpy(chunk), self.resize, self.crop, self.device,
                               self.normalize)
                out[start : start + step] = self.forward_preprocessed(x).cpu().numpy()
        return out


def create_encoder(
    name: str,
    weights: str = "pretrained",
    precision: str = "fp32",
    resize: int | None = None,
    crop: int | None = None,
    device: str = "cpu",
) -> FrozenEncoder:
    """Build a frozen encoder. `weights`: "pretrained", "random" or a .pth/.safetensors path;
    `resize`/`crop`: None for the encoder's own input size (ImageNet models: 256/224);
    `device`: "cpu", "cuda[:N]" or "auto" (CUDA when present)."""
    spec = encoder_spec(name, weights)
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    for field, value in (("resize", resize), ("crop", crop)):
        if value is not None and value <= 0:
            raise invalid_value(field, value, "a positive integer")
    resize, crop = input_size(spec, resize, crop)
    torch_device = torch.device(resolve_device(device))
    if torch_device.type == "cuda":
        fp32_exact()  # the device stays out of the keys only because fp32 is exact there
    module, identity = build_module(spec, weights)
    module = module.to(torch_device)
    if precision == "bf16":
        module = module.to(memory_format=torch.channels_last)
    return FrozenEncoder(
        name=name,
        module=module,
        feature_dim=spec.feature_dim,
        weights=identity,
        precision=precision,
        resize=resize,
        crop=crop,
        device=torch_device,
        normalize=spec.normalize,
        frame_stack=spec.frame_stack,
    )
