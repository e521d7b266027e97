"""The registered encoders: short aliases of timm models, torchvision's ShuffleNet and the VAE.

Every other timm model name works too (``timm_zoo``, installed here as the registry's lookup);
the aliases keep RRL's names. Each alias's input is timm's pretrained data config for its tag,
written out here so that `rrl status` never imports timm (tests/test_zoo.py checks each against
``timm.data.resolve_model_data_config``). The ResNets use the `tv_in1k` tags, torchvision's
ImageNet weights as in RRL, whose config is RRL's Resize(256)/CenterCrop(224); their key names
match torchvision's, so a torchvision ResNet file loads into them directly. ``resnet10t.c3_in1k``
and ``mobilenetv3_large_100.ra_in1k`` are timm's own trainings, at 176 px and 224 px, bicubic.
The `vae` encoder is the encoder half of the VAE the vae stage trains on a task's own frames;
the `rad` encoder is the pixel encoder the rad stage's actor learned to act through.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING

from pipeline.encoders.input_config import InputConfig
from pipeline.encoders.rad_architecture import DEFAULT_ARCHITECTURE as RAD_DEFAULT
from pipeline.encoders.rad_architecture import RADArchitecture
from pipeline.encoders.rad_architecture import architecture_of_weights as rad_architecture
from pipeline.encoders.registry import (
    RRL_INPUT,
    EncoderSpec,
    HubLocation,
    register_encoder,
    set_lookup,
)
from pipeline.encoders.timm_zoo import timm_model, timm_pretrained_model, timm_spec
from pipeline.encoders.vae_architecture import (
    DEFAULT_ARCHITECTURE,
    VAEArchitecture,
    architecture_of_weights,
)

if TYPE_CHECKING:
    from torch import nn

set_lookup(timm_spec)


def _alias(name: str, tag: str, feature_dim: int, data: InputConfig,
           reference_file: str | None = None, classifier: str = "fc") -> None:
    register_encoder(
        name=name, library="timm", pretrained_tag=tag, feature_dim=feature_dim,
        head_keys=(f"{classifier}.weight", f"{classifier}.bias"), reference_file=reference_file,
        input=data, hub=HubLocation(hf_hub_id=f"timm/{tag}"),
        load_pretrained=partial(timm_pretrained_model, tag, data.crop, False),
    )(partial(timm_model, tag, data.crop, False))


_alias("resnet10t", "resnet10t.c3_in1k", 512, InputConfig(201, 176, "bicubic"))
_alias("resnet18", "resnet18.tv_in1k", 512, RRL_INPUT, "resnet18-f37072fd.pth")
_alias("resnet34", "resnet34.tv_in1k", 512, RRL_INPUT, "resnet34-b627a593.pth")
_alias("resnet50", "resnet50.tv_in1k", 2048, RRL_INPUT, "resnet50-0676ba61.pth")
# With num_classes=0 timm keeps the 960->1280 conv_head, so the features are 1280-d, not 960.
_alias("mobilenetv3_large_100", "mobilenetv3_large_100.ra_in1k", 1280,
       InputConfig(256, 224, "bicubic"), "mobilenetv3_large_100_ra-f55367f5.pth", "classifier")

SHUFFLENET_URL = "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth"


# timm has no ShuffleNet, so this one comes from torchvision (its weights file by URL, as
# torchvision downloads it, into torch.hub's cache).
@register_encoder(
    feature_dim=1024, library="torchvision",
    pretrained_tag="ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
    reference_file="shufflenetv2_x1-5666bf0f80.pth", hub=HubLocation(url=SHUFFLENET_URL),
)
def shufflenet_v2_x1_0(crop: int) -> nn.Module:
    from torch import nn
    from torchvision.models import shufflenet_v2_x1_0

    model: nn.Module = shufflenet_v2_x1_0(weights=None)
    model.fc = nn.Identity()  # its forward ends in mean([2, 3]) then fc: pooled features remain
    return model


def _vae_encoder(arch: VAEArchitecture) -> nn.Module:
    from pipeline.encoders.vae import VAEEncoder

    return VAEEncoder(arch)


def _vae_spec_for_weights(spec: EncoderSpec, weights: str) -> EncoderSpec:
    # The shape is in the weights file: its latent is the feature width, its input the frame size.
    arch = architecture_of_weights(spec.name, weights)
    if arch == DEFAULT_ARCHITECTURE:
        return spec
    return dataclasses.replace(spec, feature_dim=arch.latent,
                               input=InputConfig.named(arch.input_size, arch.input_size, "none"),
                               builder=lambda crop: _vae_encoder(arch))


# Trained by the vae stage (`make vae`) on [0, 1] pixels: no ImageNet normalization, and no
# pretrained weights. The feature is the posterior mean.
@register_encoder(
    feature_dim=DEFAULT_ARCHITECTURE.latent, library="project", pretrained_tag=None, head_keys=(),
    input=InputConfig.named(DEFAULT_ARCHITECTURE.input_size, DEFAULT_ARCHITECTURE.input_size,
                            "none"),
    for_weights=_vae_spec_for_weights,
)
def vae(crop: int) -> nn.Module:
    return _vae_encoder(DEFAULT_ARCHITECTURE)


def _rad_encoder(arch: RADArchitecture) -> nn.Module:
    from pipeline.rl.rad_nets import RADEncoder

    return RADEncoder(arch)


def _rad_spec_for_weights(spec: EncoderSpec, weights: str) -> EncoderSpec:
    # Feature width, frame stack, rendered size and crop are in the weights file.
    arch = rad_architecture(spec.name, weights)
    if arch == RAD_DEFAULT:
        return spec
    return dataclasses.replace(spec, feature_dim=arch.feature_dim,
                               input=InputConfig.named(arch.input_size, arch.crop, "none"),
                               frame_stack=arch.frame_stack,
                               builder=lambda crop: _rad_encoder(arch))


# Trained by the rad stage (`make rad`, DeepMind Control) on [0, 1] pixels of 3 stacked frames,
# 100 px renders centre-cropped to 84 as RAD acts; no pretrained weights exist.
@register_encoder(
    feature_dim=RAD_DEFAULT.feature_dim, library="project", pretrained_tag=None, head_keys=(),
    input=InputConfig.named(RAD_DEFAULT.input_size, RAD_DEFAULT.crop, "none"),
    for_weights=_rad_spec_for_weights, frame_stack=RAD_DEFAULT.frame_stack,
)
def rad(crop: int) -> nn.Module:
    return _rad_encoder(RAD_DEFAULT)
