"""Encoder registry: names to import-light specs.

Nothing here imports torch, timm or torchvision: the specs are read when computing cache keys and
`rrl status`, which must stay fast. Builders import their libraries only when called.

A spec also says what input the encoder expects (``input_size``, ``normalize``). Most encoders
have one fixed architecture; an encoder whose shape is stored with its weights (the project's VAE)
registers ``for_weights``, and ``encoder_spec(name, weights)`` then returns the spec of that file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.errors import invalid_value, unknown_name

if TYPE_CHECKING:
    from torch import nn

Source = Literal["timm", "torchvision", "project"]
# builder(pretrained) -> the model without its classifier, outputting pooled features.
Builder = Callable[[bool], "nn.Module"]
# RRL's ImageNet preprocessing: Resize(256) then CenterCrop(224).
IMAGENET_INPUT = (256, 224)
NORMALIZATIONS = ("imagenet", "none")


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    feature_dim: int
    source: Source
    # timm model tag ("resnet34.tv_in1k") or torchvision weights enum ("ResNet..._Weights.X");
    # None: no pretrained weights exist (the project's own encoders are trained here).
    pretrained_tag: str | None
    builder: Builder
    # Classifier keys a full-model state dict carries; dropped when loading a file because the
    # encoder has no head.
    head_keys: tuple[str, ...] = ("fc.weight", "fc.bias")
    # File name of the standard download of the same weights, quoted in error messages so a user
    # on an offline machine knows which file to fetch elsewhere.
    reference_file: str | None = None
    # (resize, crop): Resize(shorter side) then CenterCrop, the input the encoder was trained on.
    input_size: tuple[int, int] = IMAGENET_INPUT
    # "imagenet": ImageNet mean/std after scaling to [0, 1]; "none": pixels / 255 in [0, 1].
    normalize: str = "imagenet"
    # (this spec, weights) -> the spec of those weights, for encoders whose architecture is
    # stored in the weights file. Must stay torch-free: it runs when keys are computed.
    for_weights: Callable[[EncoderSpec, str], EncoderSpec] | None = None
    # Consecutive frames of an episode the encoder takes at once, stacked along the channels,
    # oldest first (RAD: 3); the frames before an episode's first are that first frame.
    frame_stack: int = 1


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(
    *,
    feature_dim: int,
    source: Source,
    pretrained_tag: str | None,
    head_keys: tuple[str, ...] = ("fc.weight", "fc.bias"),
    reference_file: str | None = None,
    name: str | None = None,
    input_size: tuple[int, int] = IMAGENET_INPUT,
    normalize: str = "imagenet",
    for_weights: Callable[[EncoderSpec, str], EncoderSpec] | None = None,
    frame_stack: int = 1,
) -> Callable[[Builder], Builder]:
    """Register the decorated builder under its function name (or `name`)."""

    def decorate(builder: Builder) -> Builder:
        key = name or getattr(builder, "__name__", "")
        if not key:
            raise invalid_value("encoder name", key, "a non-empty name")
        if key in _REGISTRY:
            raise invalid_value("encoder name", key, "a name not already registered")
        if normalize not in NORMALIZATIONS:
            raise unknown_name("normalisation", normalize, NORMALIZATIONS)
        _REGISTRY[key] = EncoderSpec(
            name=key,
            feature_dim=feature_dim,
            source=source,
            pretrained_tag=pretrained_tag,
            builder=builder,
            head_keys=head_keys,
            reference_file=reference_file,
            input_size=input_size,
            normalize=normalize,
            for_weights=for_weights,
            frame_stack=frame_stack,
        )
        return builder

    return decorate


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def encoder_spec(name: str, weights: str | None = None) -> EncoderSpec:
    """The registered spec; with `weights`, the spec of those weights (see ``for_weights``)."""
    try:
        spec = _REGISTRY[name]
    except KeyError:
        raise unknown_name("encoder", name, list_encoders()) from None
    if weights is not None and spec.for_weights is not None:
        return spec.for_weights(spec, weights)
    return spec


def input_size(spec: EncoderSpec, resize: int | None, crop: int | None) -> tuple[int, int]:
    """(resize, crop) to use: each given value overrides the encoder's own."""
    size = (spec.input_size[0] if resize is None else resize,
            spec.input_size[1] if crop is None else crop)
    if size[1] > size[0]:
        raise invalid_value("encode.crop", size[1], f"at most encode.resize={size[0]} (encoder "
                            f"{spec.name!r} expects resize {spec.input_size[0]}, crop "
                            f"{spec.input_size[1]}); Fix: set both, or leave crop unset")
    return size
