"""RRL's ImageNet preprocessing, batched in torch: Resize(shorter side), CenterCrop, normalise.

Follows torchvision's Resize(int)/CenterCrop arithmetic so features match the paper's
PIL-era pipeline; the resized image is rounded to whole 0..255 levels because PIL (and
torchvision on uint8) resizes in uint8 before ToTensor divides by 255.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = "bilinear"


def preprocessing_description(resize: int, crop: int) -> dict[str, Any]:
    """JSON-able record of the preprocessing; it enters the encode stage's cache key."""
    return {
        "resize": resize,
        "crop": crop,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "interpolation": INTERPOLATION,
        "antialias": True,
        "round_to_uint8_after_resize": True,
    }


def resized_size(height: int, width: int, resize: int) -> tuple[int, int]:
    """Output (h, w) of Resize(resize): shorter side to `resize`, longer scaled and truncated."""
    if height <= width:
        return resize, int(resize * width / height)
    return int(resize * height / width), resize


def preprocess(frames: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, crop, crop), normalised with ImageNet mean/std."""
    x = frames.permute(0, 3, 1, 2).to(torch.float32)
    height, width = x.shape[-2:]
    size = resized_size(height, width, resize)
    # Same-size interpolation is the identity; skipping it saves time at RRL's 256->256.
    if size != (height, width):
        x = F.interpolate(x, size=size, mode=INTERPOLATION, align_corners=False, antialias=True)
        x = x.round_().clamp_(0.0, 255.0)
    top = round((size[0] - crop) / 2.0)
    left = round((size[1] - crop) / 2.0)
    x = x[:, :, top : top + crop, left : left + crop]
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).contiguous()
