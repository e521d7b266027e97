"""Encoder registry: names to import-light specs.

Nothing here imports torch, timm or torchvision: the specs are read when computing cache keys and
`rrl status`, which must stay fast. Builders import their libraries only when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.errors import invalid_value, unknown_name

if TYPE_CHECKING:
    from torch import nn

Source = Literal["timm", "torchvision"]
# builder(pretrained) -> the model without its classifier, outputting pooled features.
Builder = Callable[[bool], "nn.Module"]


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    feature_dim: int
    source: Source
    # timm model tag ("resnet34.tv_in1k") or torchvision weights enum ("ResNet..._Weights.X").
    pretrained_tag: str
    builder: Builder
    # Classifier keys a full-model state dict carries; dropped when loading a file because the
    # encoder has no head.
    head_keys: tuple[str, ...] = ("fc.weight", "fc.bias")
    # File name of the standard download of the same weights, quoted in error messages so a user
    # on an offline machine knows which file to fetch elsewhere.
    reference_file: str | None = None


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(
    *,
    feature_dim: int,
    source: Source,
    pretrained_tag: str,
    head_keys: tuple[str, ...] = ("fc.weight", "fc.bias"),
    reference_file: str | None = None,
    name: str | None = None,
) -> Callable[[Builder], Builder]:
    """Register the decorated builder under its function name (or `name`)."""

    def decorate(builder: Builder) -> Builder:
        key = name or getattr(builder, "__name__", "")
        if not key:
            raise invalid_value("encoder name", key, "a non-empty name")
        if key in _REGISTRY:
            raise invalid_value("encoder name", key, "a name not already registered")
        _REGISTRY[key] = EncoderSpec(
            name=key,
            feature_dim=feature_dim,
            source=source,
            pretrained_tag=pretrained_tag,
            builder=builder,
            head_keys=head_keys,
            reference_file=reference_file,
        )
        return builder

    return decorate


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def encoder_spec(name: str) -> EncoderSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("encoder", name, list_encoders()) from None
