"""RRL's ImageNet preprocessing, batched in torch: Resize(shorter side), CenterCrop, normalise.

Encoders trained here on raw pixels (the VAE) use the same resize and crop with ``normalize=
"none"``: pixels / 255 in [0, 1], recorded as mean 0 and std 1 so the description stays exact.

RRL ran torchvision's Resize/CenterCrop on PIL images, which resize in uint8. Resizing here runs
torch's uint8 antialiased bilinear kernel on the CPU, the same kernel torchvision's tensor Resize
uses: it was written to match PIL (at most one grey level apart), is ~50x faster than resizing in
float, and keeps features independent of the device the model runs on. Float conversion and
normalisation happen after the crop, on the model's device.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pipeline.errors import unknown_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = "bilinear"
# normalize -> (mean, std) applied to pixels / 255.
NORMALIZATION = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": ((0.0,) * 3, (1.0,) * 3)}


def normalization(normalize: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if normalize not in NORMALIZATION:
        raise unknown_name("normalisation", normalize, list(NORMALIZATION))
    return NORMALIZATION[normalize]


def preprocessing_description(resize: int, crop: int, normalize: str = "imagenet") -> dict[str, Any]:
    """JSON-able record of the preprocessing, stored with the features it made."""
    mean, std = normalization(normalize)
    return {
        "resize": resize,
        "crop": crop,
        "mean": list(mean),
        "std": list(std),
        "interpolation": INTERPOLATION,
        "antialias": True,
        "resize_dtype": "uint8",
    }


def resized_size(height: int, width: int, resize: int) -> tuple[int, int]:
    """Output (h, w) of Resize(resize): shorter side to `resize`, longer scaled and truncated."""
    if height <= width:
        return resize, int(resize * width / height)
    return int(resize * height / width), resize


def crop_box(height: int, width: int, crop: int) -> tuple[int, int]:
    """(top, left) of CenterCrop(crop), rounded as torchvision rounds it."""
    return round((height - crop) / 2.0), round((width - crop) / 2.0)


def resize_crop(frames: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, crop, crop) on the CPU: Resize then CenterCrop."""
    # The permuted view is channels_last in memory, the layout the uint8 kernel is fastest on.
    x = frames.to("cpu").permute(0, 3, 1, 2)
    height, width = x.shape[-2:]
    size = resized_size(height, width, resize)
    # Same-size resizing is the identity; skipping it saves time at RRL's 256 -> Resize(256).
    if size != (height, width):
        x = F.interpolate(x, size=size, mode=INTERPOLATION, align_corners=False, antialias=True)
    top, left = crop_box(size[0], size[1], crop)
    return x[:, :, top : top + crop, left : left + crop]


def normalize_pixels(x: torch.Tensor, normalize: str = "imagenet") -> torch.Tensor:
    """uint8 (N, 3k, H, W) -> float32: pixels / 255, then the normalisation's mean and std (each
    of k stacked RGB frames alike)."""
    stacked = x.shape[1] // 3
    mean, std = (torch.tensor(v * stacked, device=x.device).view(1, 3 * stacked, 1, 1)
                 for v in normalization(normalize))
    return ((x.to(torch.float32) / 255.0 - mean) / std).contiguous()


def preprocess(
    frames: torch.Tensor, resize: int, crop: int, device: torch.device | str = "cpu",
    normalize: str = "imagenet",
) -> torch.Tensor:
    """uint8 (N, H, W, 3k) on the CPU -> float32 (N, 3k, crop, crop) on `device`, normalised."""
    x = resize_crop(frames, resize, crop).to(device)  # uint8: a quarter the transfer
    return normalize_pixels(x, normalize)
