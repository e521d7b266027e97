"""The VAE's shape, as the vae stage's config sets it and its weights file records it (no torch).

The registered ``vae`` encoder has no fixed shape: input size, latent width and channel counts
come from ``VAEConfig``. The encoder weights file carries them in its safetensors metadata, so
``encoder_spec("vae", path)`` learns the feature width and the input size from the file's header
alone; computing keys and ``rrl status`` must not import torch.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import VAEConfig
from pipeline.encoders.weights import (
    trained_weights_file,
    weights_fix,
)
from pipeline.errors import WeightsError

FORMAT = "rrl-vae/1"  # the "format" of the files the vae stage writes
# One metadata entry holding sorted JSON: safetensors writes several entries in a random order,
# and the file's sha256 (the encode key) must not depend on that.
METADATA_KEY = "rrl_vae"
_MAX_HEADER = 1 << 24  # a safetensors header is JSON of a few KB; more means not one


@dataclass(frozen=True)
class VAEArchitecture:
    """Stride-2 4x4 convolutions with ``channels`` on ``input_size``-square RGB, ``latent`` wide."""

    input_size: int
    latent: int
    channels: tuple[int, ...]

    @classmethod
    def from_config(cls, cfg: VAEConfig) -> VAEArchitecture:
        return cls(cfg.input_size, cfg.latent, tuple(cfg.channels))

    def spatial_sizes(self) -> list[int]:
        """Side length of the input and after each convolution (kernel 4, stride 2, padding 1)."""
        sizes = [self.input_size]
        for _ in self.channels:
            sizes.append(sizes[-1] // 2)
        return sizes

    @property
    def flat_features(self) -> int:
        """Width of the flattened output of the last convolution."""
        return self.channels[-1] * self.spatial_sizes()[-1] ** 2

    def as_dict(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "latent": self.latent, "channels": list(self.channels)}

    def metadata(self, part: str) -> dict[str, str]:
        """Safetensors metadata for a file holding ``part`` ("encoder" or "vae")."""
        record = {"format": FORMAT, "part": part, "architecture": self.as_dict()}
        return {METADATA_KEY: json.dumps(record, sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], where: str, part: str) -> VAEArchitecture:
        try:
            meta = json.loads(metadata.get(METADATA_KEY, "{}"))
        except ValueError:
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("format") != FORMAT or meta.get("part") != part:
            raise WeightsError(
                f"weights file {where!r} is not a VAE {part} file written by the vae stage (its "
                f"metadata has format {meta.get('format')!r}, part {meta.get('part')!r}; expected "
                f"{FORMAT!r}, {part!r}). {weights_fix('vae')}")
        try:
            arch = meta["architecture"]
            return cls(int(arch["input_size"]), int(arch["latent"]),
                       tuple(int(c) for c in arch["channels"]))
        except (KeyError, TypeError, ValueError) as err:
            raise WeightsError(f"weights file {where!r}: its VAE architecture metadata cannot be "
                               f"read ({type(err).__name__}: {err}). {weights_fix('vae')}") from err


DEFAULT_ARCHITECTURE = VAEArchitecture.from_config(VAEConfig())


def safetensors_metadata(path: Path, name: str = "vae") -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its header only (``name``: the
    encoder it is for, named in the error)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (-1,)
            if not 0 < length <= _MAX_HEADER:
                raise ValueError(f"header length {length}")
            header = json.loads(fh.read(length))
        meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
        if not isinstance(meta, dict):
            raise ValueError("no metadata mapping")
    except (OSError, ValueError) as err:
        raise WeightsError(f"weights file {str(path)!r} is not a readable safetensors file "
                           f"({type(err).__name__}: {err}). {weights_fix(name)}") from err
    return {str(k): str(v) for k, v in meta.items()}


def read_architecture(path: Path, part: str = "encoder") -> VAEArchitecture:
    return VAEArchitecture.from_metadata(safetensors_metadata(path), str(path), part)


def architecture_of_weights(name: str, weights: str) -> VAEArchitecture:
    """The shape of ``weights``: random weights have the default shape, a file its own."""
    path = trained_weights_file(name, weights, "vae")
    return DEFAULT_ARCHITECTURE if path is None else read_architecture(path)
