"""The RAD encoder's shape, as the rad stage's config sets it and its weights file records it.

No torch here, as in vae_architecture.py: ``encoder_spec("rad", path)`` learns the feature width,
the frame stack and the input size from the safetensors header alone, so keys and ``rrl status``
stay fast. The file holds the encoder the trained actor acted through (the convolutions it shares
with the critic, then its own linear layer and LayerNorm); the architecture is one metadata entry
of sorted JSON, so the file's bytes (and sha256, the encode key) do not depend on dict order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import RADConfig
from pipeline.encoders.vae_architecture import safetensors_metadata
from pipeline.encoders.weights import (
    trained_weights_file,
    weights_fix,
)
from pipeline.errors import WeightsError

FORMAT = "rrl-rad/1"  # the "format" of the encoder files the rad stage writes
METADATA_KEY = "rrl_rad"


@dataclass(frozen=True)
class RADArchitecture:
    """``conv_layers`` 3x3 convolutions (stride 2, then 1) of ``filters`` channels on a stack of
    ``frame_stack`` RGB frames cropped to ``crop``; a linear layer and LayerNorm to
    ``feature_dim``. ``input_size`` is the rendered frame's side, centre-cropped to ``crop``."""

    frame_stack: int
    input_size: int
    crop: int
    filters: int
    conv_layers: int
    feature_dim: int

    @classmethod
    def from_config(cls, cfg: RADConfig) -> RADArchitecture:
        return cls(cfg.frame_stack, cfg.render_size, cfg.crop, cfg.filters, cfg.conv_layers,
                   cfg.feature_dim)

    @property
    def channels(self) -> int:
        return 3 * self.frame_stack

    def conv_side(self) -> int:
        """Side of the last convolution's output (no padding: 84 -> 41 -> 39 -> 37 -> 35)."""
        return (self.crop - 3) // 2 + 1 - 2 * (self.conv_layers - 1)

    @property
    def flat_features(self) -> int:
        return self.filters * self.conv_side() ** 2

    def as_dict(self) -> dict[str, Any]:
        return {"frame_stack": self.frame_stack, "input_size": self.input_size, "crop": self.crop,
                "filters": self.filters, "conv_layers": self.conv_layers,
                "feature_dim": self.feature_dim}

    def metadata(self, extra: dict[str, Any] | None = None) -> dict[str, str]:
        """Safetensors metadata: the architecture, plus what the encoder was trained on."""
        record = {"format": FORMAT, "architecture": self.as_dict(), **(extra or {})}
        return {METADATA_KEY: json.dumps(record, sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], where: str) -> RADArchitecture:
        try:
            meta = json.loads(metadata.get(METADATA_KEY, "{}"))
        except ValueError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("format") != FORMAT:
            raise WeightsError(
                f"weights file {where!r} is not a RAD encoder file written by the rad stage (its "
                f"metadata has format {meta.get('format')!r}; expected {FORMAT!r}). "
                f"{weights_fix('rad')}")
        try:
            arch = meta["architecture"]
            return cls(*(int(arch[k]) for k in ("frame_stack", "input_size", "crop", "filters",
                                                 "conv_layers", "feature_dim")))
        except (KeyError, TypeError, ValueError) as err:
            raise WeightsError(f"weights file {where!r}: its RAD architecture metadata cannot be "
                               f"read ({type(err).__name__}: {err}). {weights_fix('rad')}") from err


DEFAULT_ARCHITECTURE = RADArchitecture.from_config(RADConfig())


def read_architecture(path: Path) -> RADArchitecture:
    return RADArchitecture.from_metadata(safetensors_metadata(path, "rad"), str(path))


def architecture_of_weights(name: str, weights: str) -> RADArchitecture:
    """The shape of ``weights``: random weights have the default shape, a file its own."""
    path = trained_weights_file(name, weights, "rad")
    return DEFAULT_ARCHITECTURE if path is None else read_architecture(path)
