"""Frozen encoders (ImageNet backbones and the project's VAE): registry, weights, preprocessing.

Importing this package stays cheap (no torch): the registry and `weights_identity` feed cache
keys and `rrl status`. `create_encoder` and `FrozenEncoder` load torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.encoders import models as _models  # noqa: F401  (registers the encoders)
from pipeline.encoders.registry import (
    EncoderSpec,
    encoder_spec,
    input_size,
    list_encoders,
    register_encoder,
)
from pipeline.encoders.weights import weights_identity

if TYPE_CHECKING:
    from pipeline.encoders.frozen import FrozenEncoder, create_encoder

__all__ = [
    "EncoderSpec",
    "FrozenEncoder",
    "create_encoder",
    "encoder_spec",
    "input_size",
    "list_encoders",
    "register_encoder",
    "weights_identity",
]

_LAZY = ("FrozenEncoder", "create_encoder")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from pipeline.encoders import frozen

        return getattr(frozen, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
