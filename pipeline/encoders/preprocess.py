"""Encoder input, batched in torch: Resize, CenterCrop, normalize (``InputConfig``).

The config is timm's pretrained data config for timm models (RRL's Resize(256), CenterCrop(224),
bilinear, ImageNet mean/std for ``resnet*.tv_in1k``; bicubic for many others). Encoders trained
here on raw pixels (the VAE) use ``normalize="none"``: pixels / 255 in [0, 1], recorded as mean 0
and std 1 so the description stays exact.

RRL and timm's eval transform resize PIL images, in uint8. Resizing here runs torch's uint8
antialiased kernels on the CPU (bilinear and bicubic), the ones torchvision's tensor Resize uses:
written to match PIL (tests/test_encoders.py measures the largest difference against timm's own
``create_transform`` per encoder), ~50x faster than resizing in float, and independent of the
device the model runs on. Float conversion and normalization happen after the crop, on the
model's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.encoders.input_config import NORMALIZATIONS, InputConfig
from pipeline.errors import unknown_name


def normalization(normalize: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if normalize not in NORMALIZATIONS:
        raise unknown_name("normalization", normalize, list(NORMALIZATIONS))
    return NORMALIZATIONS[normalize]


def resized_size(height: int, width: int, resize: int) -> tuple[int, int]:
    """Output (h, w) of Resize(resize): shorter side to `resize`, longer scaled and truncated."""
    if height <= width:
        return resize, int(resize * width / height)
    return int(resize * height / width), resize


def crop_box(height: int, width: int, crop: int) -> tuple[int, int]:
    """(top, left) of CenterCrop(crop), rounded as torchvision rounds it."""
    return round((height - crop) / 2.0), round((width - crop) / 2.0)


def resize_crop(frames: torch.Tensor, resize: int, crop: int, interpolation: str = "bilinear",
                crop_mode: str = "center") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, crop, crop) on the CPU: Resize then CenterCrop.

    ``center`` resizes the shorter side to ``resize``; ``squash`` resizes both sides to it.
    """
    # The permuted view is channels_last in memory, the layout the uint8 kernel is fastest on.
    x = frames.to("cpu").permute(0, 3, 1, 2)
    height, width = x.shape[-2:]
    size = (resize, resize) if crop_mode == "squash" else resized_size(height, width, resize)
    # Same-size resizing is the identity; skipping it saves time at RRL's 256 -> Resize(256).
    if size != (height, width):
        x = F.interpolate(x, size=size, mode=interpolation, align_corners=False, antialias=True)
    top, left = crop_box(size[0], size[1], crop)
    return x[:, :, top : top + crop, left : left + crop]


def normalize_pixels(x: torch.Tensor, normalize: str | tuple[tuple[float, ...], tuple[float, ...]]
                     = "imagenet") -> torch.Tensor:
    """uint8 (N, 3k, H, W) -> float32: pixels / 255, then the normalization's (or given) mean and
    std (each of k stacked RGB frames alike)."""
    pair = normalization(normalize) if isinstance(normalize, str) else normalize
    stacked = x.shape[1] // 3
    mean, std = (torch.tensor(tuple(v) * stacked, device=x.device).view(1, 3 * stacked, 1, 1)
                 for v in pair)
    return ((x.to(torch.float32) / 255.0 - mean) / std).contiguous()


def apply_input(frames: torch.Tensor, cfg: InputConfig, device: torch.device | str = "cpu"
                ) -> torch.Tensor:
    """uint8 (N, H, W, 3k) on the CPU -> float32 (N, 3k, crop, crop) on `device`, normalized."""
    x = resize_crop(frames, cfg.resize, cfg.crop, cfg.interpolation, cfg.crop_mode)
    return normalize_pixels(x.to(device), (cfg.mean, cfg.std))  # uint8: a quarter the transfer


def preprocess(frames: torch.Tensor, resize: int, crop: int, device: torch.device | str = "cpu",
               normalize: str = "imagenet") -> torch.Tensor:
    """RRL's input (bilinear, shorter side) with a named normalization; see ``apply_input``."""
    return apply_input(frames, InputConfig.named(resize, crop, normalize), device)
