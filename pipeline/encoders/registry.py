"""Encoder registry: names to import-light specs.

Nothing here imports torch, timm or torchvision: the specs are read when computing cache keys and
`rrl status`, which must stay fast. Builders import their libraries only when called.

Registered names are the short aliases (RRL's ``resnet34`` = ``resnet34.tv_in1k``, ...),
torchvision's ShuffleNet and the project's own encoders; every other name is looked up in timm
(``pipeline.encoders.timm_zoo``, installed as the fallback by ``models``). A spec says what input
the encoder expects (``input``: timm's pretrained data config for timm models) and where its
pretrained weights come from (``hub``). An encoder whose shape is stored with its weights (the
project's VAE) registers ``for_weights``, and ``encoder_spec(name, weights)`` then returns the spec
of that file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.encoders.input_config import InputConfig
from pipeline.errors import invalid_value, unknown_name

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

Library = Literal["timm", "torchvision", "project"]
# builder(crop) -> the randomly initialised model without its classifier, outputting pooled
# features, for square inputs of side ``crop`` (ViTs size their position embedding to it).
Builder = Callable[[int], "nn.Module"]
# (crop, pretrained weights file) -> the model with those weights, loaded by its library's own
# loader (timm's); None: the builder's model, then the file as a state dict.
PretrainedBuilder = Callable[[int, "Path"], "nn.Module"]
# RRL's ImageNet preprocessing: Resize(256), CenterCrop(224), bilinear, ImageNet mean/std.
RRL_INPUT = InputConfig(256, 224)


@dataclass(frozen=True)
class HubLocation:
    """Where pretrained weights are downloaded from (timm's pretrained_cfg fields)."""

    hf_hub_id: str | None = None  # "timm/resnet34.tv_in1k": the Hugging Face hub repository
    hf_hub_filename: str | None = None  # a file other than timm's default names
    url: str | None = None  # a direct download (torch.hub's cache), when there is no hub repo


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    library: Library
    # timm model tag ("resnet34.tv_in1k") or torchvision weights enum ("ResNet..._Weights.X");
    # None: no pretrained weights exist (the project's own encoders are trained here).
    pretrained_tag: str | None
    builder: Builder
    # Width of the default (pooled pre-logits) feature when known without building the model;
    # None for timm models looked up by name (the built encoder measures it).
    feature_dim: int | None = None
    # Classifier keys a full-model state dict carries; dropped when loading a file because the
    # encoder has no head (timm's pretrained_cfg["classifier"], with .weight and .bias).
    head_keys: tuple[str, ...] = ("fc.weight", "fc.bias")
    # File name of the standard download of the same weights, quoted in error messages so a user
    # on an offline machine knows which file to fetch elsewhere.
    reference_file: str | None = None
    input: InputConfig = RRL_INPUT
    # (this spec, weights) -> the spec of those weights, for encoders whose architecture is
    # stored in the weights file. Must stay torch-free: it runs when keys are computed.
    for_weights: Callable[[EncoderSpec, str], EncoderSpec] | None = None
    hub: HubLocation | None = None
    load_pretrained: PretrainedBuilder | None = None
    registered: bool = True  # a short alias or project encoder, not a name looked up in timm
    # Consecutive frames of an episode the encoder takes at once, stacked along the channels,
    # oldest first (RAD: 3); the frames before an episode's first are that first frame.
    frame_stack: int = 1

    @property
    def normalize(self) -> str:
        return self.input.normalize

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input.resize, self.input.crop


_REGISTRY: dict[str, EncoderSpec] = {}
# name -> spec of a timm model that is not registered (raises UnknownNameError for no model).
_LOOKUP: list[Callable[[str], EncoderSpec]] = []


def register_encoder(
    *,
    library: Library,
    pretrained_tag: str | None,
    feature_dim: int | None = None,
    head_keys: tuple[str, ...] = ("fc.weight", "fc.bias"),
    reference_file: str | None = None,
    name: str | None = None,
    input: InputConfig = RRL_INPUT,
    for_weights: Callable[[EncoderSpec, str], EncoderSpec] | None = None,
    hub: HubLocation | None = None,
    load_pretrained: PretrainedBuilder | None = None,
    frame_stack: int = 1,
) -> Callable[[Builder], Builder]:
    """Register the decorated builder under its function name (or `name`)."""

    def decorate(builder: Builder) -> Builder:
        key = name or getattr(builder, "__name__", "")
        if not key:
            raise invalid_value("encoder name", key, "a non-empty name")
        if key in _REGISTRY:
            raise invalid_value("encoder name", key, "a name not already registered")
        _REGISTRY[key] = EncoderSpec(
            name=key, library=library, pretrained_tag=pretrained_tag, builder=builder,
            feature_dim=feature_dim, head_keys=head_keys, reference_file=reference_file,
            input=input, for_weights=for_weights, hub=hub, load_pretrained=load_pretrained,
            frame_stack=frame_stack,
        )
        return builder

    return decorate


def set_lookup(lookup: Callable[[str], EncoderSpec]) -> None:
    """Install the lookup of names that are not registered (timm's models)."""
    _LOOKUP[:] = [lookup]


def list_encoders() -> list[str]:
    """The registered names (aliases and project encoders); any timm model name works too."""
    return sorted(_REGISTRY)


def encoder_spec(name: str, weights: str | None = None) -> EncoderSpec:
    """The spec of ``name``; with `weights`, the spec of those weights (see ``for_weights``)."""
    spec = _REGISTRY.get(name)
    if spec is None:
        if not _LOOKUP:
            raise unknown_name("encoder", name, list_encoders())
        spec = _LOOKUP[0](name)
    if weights is not None and spec.for_weights is not None:
        return spec.for_weights(spec, weights)
    return spec


def resolve_input(spec: EncoderSpec, resize: int | None = None, crop: int | None = None,
                  interpolation: str | None = None) -> InputConfig:
    """The encoder's own input with each ``encode.*`` setting that is set overriding it."""
    return spec.input.override(resize, crop, interpolation)


def input_size(spec: EncoderSpec, resize: int | None, crop: int | None) -> tuple[int, int]:
    """(resize, crop) to use: each given value overrides the encoder's own."""
    cfg = resolve_input(spec, resize, crop)
    return cfg.resize, cfg.crop
