"""FrozenEncoder: a frozen model plus its preprocessing, frames in, features out."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.devices import fp32_exact, resolve_device
from pipeline.encoders.input_config import InputConfig
from pipeline.encoders.layers import PRE_LOGITS
from pipeline.encoders.loading import build_module
from pipeline.encoders.preprocess import apply_input
from pipeline.encoders.registry import encoder_spec, resolve_input
from pipeline.errors import ConfigError, invalid_value, unknown_name

PRECISIONS = ("fp32", "bf16")


class FrozenEncoder:
    """Eval-mode, gradient-free model whose output is its ``features`` (name -> width),
    concatenated in that order: the pooled pre-logits feature, or the chosen layers."""

    def __init__(self, name: str, module: nn.Module, weights: dict[str, str], precision: str,
                 input_config: InputConfig, device: torch.device,
                 features: dict[str, int], frame_stack: int = 1) -> None:
        self.name = name
        self.module = module
        self.weights = weights
        self.precision = precision
        self.input = input_config
        self.device = device
        self.features = dict(features)
        self.frame_stack = frame_stack  # frames per input, stacked along the channels
        self.columns: np.ndarray | None = None  # set by ``select``: the columns encode returns

    @property
    def feature_dim(self) -> int:
        return sum(self.features.values())

    @property
    def resize(self) -> int:
        return self.input.resize

    @property
    def crop(self) -> int:
        return self.input.crop

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.input.description()

    def __repr__(self) -> str:
        return (
            f"FrozenEncoder({self.name!r}, weights={self.weights['kind']}, "
            f"precision={self.precision}, features={self.features}, device={self.device})"
        )

    def select(self, names: list[str]) -> FrozenEncoder:
        """A view of this encoder whose ``encode`` returns only ``names``, concatenated."""
        starts, start = {}, 0
        for feature, width in self.features.items():
            starts[feature] = (start, width)
            start += width
        missing = [n for n in names if n not in starts]
        if missing:
            raise unknown_name("feature", missing[0], list(self.features))
        view = copy.copy(self)
        view.columns = np.concatenate([np.arange(starts[n][0], sum(starts[n])) for n in names])
        view.features = {n: self.features[n] for n in names}
        return view

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
                x = apply_input(torch.from_numpy(chunk), self.input, self.device)
                rows = self.forward_preprocessed(x).cpu().numpy()
                out[start : start + step] = rows if self.columns is None else rows[:, self.columns]
        return out


def create_encoder(
    name: str,
    weights: str = "pretrained",
    precision: str = "fp32",
    resize: int | None = None,
    crop: int | None = None,
    device: str = "cpu",
    interpolation: str | None = None,
    layers: tuple[str, ...] = (),
    pool: str = "auto",
    weights_prefix: str | None = None,
) -> FrozenEncoder:
    """Build a frozen encoder. `weights`: "pretrained", "random" or a .pth/.safetensors path;
    `resize`/`crop`/`interpolation`: None for the encoder's own input (timm's data config);
    `layers`/`pool`: which features (see ``pipeline.encoders.layers``); `weights_prefix`: load
    a file's keys under that prefix; `device`: "cpu", "cuda[:N]" or "auto" (CUDA when present)."""
    spec = encoder_spec(name, weights)
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    for field, value in (("resize", resize), ("crop", crop)):
        if value is not None and value <= 0:
            raise invalid_value(field, value, "a positive integer")
    input_config = resolve_input(spec, resize, crop, interpolation)
    torch_device = torch.device(resolve_device(device))
    if torch_device.type == "cuda":
        fp32_exact()  # the device stays out of the keys only because fp32 is exact there
    module, identity = build_module(spec, weights, input_config.crop, weights_prefix)
    if layers:
        if spec.library != "timm":
            raise ConfigError(f"encode.layers needs a timm model; {name!r} ({spec.library}) "
                              "gives one feature. Fix: leave encode.layers unset")
        from pipeline.encoders.features import LayerFeatures, count_layers

        module = LayerFeatures(module, layers, pool, count_layers(module, input_config.crop, name),
                               name)
    features = _widths(module, input_config.crop, layers, spec.frame_stack)
    module = module.to(torch_device)
    if precision == "bf16":
        module = module.to(memory_format=torch.channels_last)
    return FrozenEncoder(name, module, identity, precision, input_config, torch_device, features,
                         spec.frame_stack)


def _widths(module: nn.Module, crop: int, layers: tuple[str, ...], frame_stack: int = 1
            ) -> dict[str, int]:
    """Each feature's width, from one forward of a blank input (on the CPU, before moving)."""
    blank = torch.zeros(1, 3 * frame_stack, crop, crop)
    with torch.inference_mode():
        if not layers:
            return {PRE_LOGITS: int(module(blank).shape[1])}
        from pipeline.encoders.features import LayerFeatures

        assert isinstance(module, LayerFeatures)
        return {name: int(part.shape[1]) for name, part in zip(module.names, module.parts(blank),
                                                                strict=True)}
