"""What an encoder's input is: resize, crop, interpolation, crop mode, mean and std (no torch).

For timm models it comes from timm's own pretrained data config (``resolve_model_data_config``:
input_size, crop_pct, crop_mode, interpolation, mean, std), read the way timm's eval transform
reads it: Resize to ``floor(input_size / crop_pct)`` (the shorter side for ``center``, both sides
for ``squash``), then CenterCrop to ``input_size``. For ``resnet*.tv_in1k`` that is RRL's
Resize(256), CenterCrop(224), bilinear, ImageNet mean/std.

The content key holds ``key()``: resize, crop and the normalization's name as before, plus
interpolation, crop mode and explicit mean/std only where they differ from RRL's. So an encoder
whose input tensor is unchanged keeps its key, and one whose tensor changes gets a new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from pipeline.config import INTERPOLATIONS
from pipeline.errors import ConfigError, invalid_value

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# normalize name -> (mean, std) applied to pixels / 255; "custom" keys the numbers themselves.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": ((0.0,) * 3, (1.0,) * 3)}
CROP_MODES = ("center", "squash")
RRL = {"interpolation": "bilinear", "crop_mode": "center"}  # what old keys implied


@dataclass(frozen=True)
class InputConfig:
    """Resize (shorter side, or both sides when ``crop_mode="squash"``), CenterCrop, normalize."""

    resize: int
    crop: int
    interpolation: str = "bilinear"
    crop_mode: str = "center"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise invalid_value("encode.interpolation", self.interpolation,
                                f"one of {', '.join(INTERPOLATIONS)}")
        if self.crop_mode not in CROP_MODES:
            raise invalid_value("crop_mode", self.crop_mode, f"one of {', '.join(CROP_MODES)}")
        if self.crop > self.resize:
            raise invalid_value("encode.crop", self.crop, f"at most encode.resize={self.resize}; "
                                "Fix: set both, or leave crop unset")

    @property
    def normalize(self) -> str:
        for name, (mean, std) in NORMALIZATIONS.items():
            if _close(self.mean, mean) and _close(self.std, std):
                return name
        return "custom"

    @classmethod
    def named(cls, resize: int, crop: int, normalize: str = "imagenet") -> InputConfig:
        if normalize not in NORMALIZATIONS:
            raise invalid_value("normalize", normalize, f"one of {', '.join(NORMALIZATIONS)}")
        mean, std = NORMALIZATIONS[normalize]
        return cls(resize, crop, mean=mean, std=std)

    @classmethod
    def from_timm(cls, cfg: dict[str, Any], model: str) -> InputConfig:
        """timm's data config (``resolve_data_config``) as this pipeline applies it."""
        size = tuple(cfg["input_size"][1:])
        crop_pct = float(cfg.get("crop_pct") or 0.875)
        mode = cfg.get("crop_mode") or "center"
        interpolation = cfg.get("interpolation") or "bilinear"
        problems = []
        if size[0] != size[1]:
            problems.append(f"a non-square input size {size}")
        if mode not in CROP_MODES:
            problems.append(f"crop_mode {mode!r}")
        if interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation {interpolation!r}")
        if problems:
            raise ConfigError(
                f"encoder {model!r}: timm's data config has {' and '.join(problems)}, which the "
                f"encode stage does not reproduce (it does {', '.join(CROP_MODES)} crops with "
                f"{', '.join(INTERPOLATIONS)} resizing of square inputs). Fix: set encode.resize, "
                f"encode.crop and encode.interpolation to choose the input yourself")
        crop = int(size[0])
        return cls(math.floor(crop / crop_pct), crop, interpolation, mode,
                   tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]))

    def override(self, resize: int | None = None, crop: int | None = None,
                 interpolation: str | None = None) -> InputConfig:
        """This config with the ``encode.resize/crop/interpolation`` settings that are set."""
        values: dict[str, Any] = {}
        if resize is not None:
            values["resize"] = resize
        if crop is not None:
            values["crop"] = crop
        if interpolation is not None:
            values["interpolation"] = interpolation
        try:
            return replace(self, **values)
        except ConfigError as err:
            raise ConfigError(f"{err} (the encoder's own input: resize {self.resize}, crop "
                              f"{self.crop})") from None

    def key(self) -> dict[str, Any]:
        """What enters the encode key (see the module docstring for why it is this shape)."""
        out: dict[str, Any] = {"resize": self.resize, "crop": self.crop,
                               "normalize": self.normalize}
        for name, default in RRL.items():
            if getattr(self, name) != default:
                out[name] = getattr(self, name)
        if out["normalize"] == "custom":
            out.update(mean=list(self.mean), std=list(self.std))
        return out

    def description(self) -> dict[str, Any]:
        """The record stored with the features (JSON)."""
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation,
                "crop_mode": self.crop_mode, "antialias": True, "resize_dtype": "uint8"}

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> InputConfig:
        """Back from a stored record (older stores lack crop_mode: theirs was center)."""
        return cls(int(d["resize"]), int(d["crop"]), str(d.get("interpolation", "bilinear")),
                   str(d.get("crop_mode", "center")), tuple(d["mean"]), tuple(d["std"]))

    def describe(self) -> str:
        """One line for listings: ``Resize(256) CenterCrop(224) bilinear, imagenet mean/std``."""
        resize = f"Resize({self.resize}{'x' + str(self.resize) if self.crop_mode == 'squash' else ''})"
        norm = self.normalize if self.normalize != "custom" else \
            f"mean {tuple(round(v, 3) for v in self.mean)} std {tuple(round(v, 3) for v in self.std)}"
        return f"{resize} CenterCrop({self.crop}) {self.interpolation}, {norm}"


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))
