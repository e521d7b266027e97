"""The registered encoders: ImageNet classifiers with their classifier removed, and the VAE.

The timm ResNets use the `tv_in1k` tags, which are torchvision's ImageNet weights, as in RRL;
their key names match torchvision's, so a torchvision ResNet file loads into them directly.
The `vae` encoder is the encoder half of the VAE the vae stage trains on a task's own frames;
the `rad` encoder is the pixel encoder the rad stage's actor learned to act through.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pipeline.encoders.rad_architecture import DEFAULT_ARCHITECTURE as RAD_DEFAULT
from pipeline.encoders.rad_architecture import RADArchitecture
from pipeline.encoders.rad_architecture import architecture_of_weights as rad_architecture
from pipeline.encoders.registry import EncoderSpec, register_encoder
from pipeline.encoders.vae_architecture import (
    DEFAULT_ARCHITECTURE,
    VAEArchitecture,
    architecture_of_weights,
)

if TYPE_CHECKING:
    from torch import nn


def _timm(tag: str, pretrained: bool) -> nn.Module:
    import timm

    # num_classes=0 swaps the classifier for Identity, leaving global-average-pooled features;
    # timm skips the classifier weights when loading pretrained ones into such a model.
    model: nn.Module = timm.create_model(tag, pretrained=pretrained, num_classes=0)
    return model


@register_encoder(feature_dim=512, source="timm", pretrained_tag="resnet10t.c3_in1k")
def resnet10t(pretrained: bool) -> nn.Module:
    return _timm("resnet10t.c3_in1k", pretrained)


@register_encoder(
    feature_dim=512, source="timm", pretrained_tag="resnet18.tv_in1k",
    reference_file="resnet18-f37072fd.pth",
)
def resnet18(pretrained: bool) -> nn.Module:
    return _timm("resnet18.tv_in1k", pretrained)


@register_encoder(
    feature_dim=512, source="timm", pretrained_tag="resnet34.tv_in1k",
    reference_file="resnet34-b627a593.pth",
)
def resnet34(pretrained: bool) -> nn.Module:
    return _timm("resnet34.tv_in1k", pretrained)


@register_encoder(
    feature_dim=2048, source="timm", pretrained_tag="resnet50.tv_in1k",
    reference_file="resnet50-0676ba61.pth",
)
def resnet50(pretrained: bool) -> nn.Module:
    return _timm("resnet50.tv_in1k", pretrained)


# With num_classes=0 timm keeps the 960->1280 conv_head, so the features are 1280-d, not 960.
@register_encoder(
    feature_dim=1280, source="timm", pretrained_tag="mobilenetv3_large_100.ra_in1k",
    head_keys=("classifier.weight", "classifier.bias"),
    reference_file="mobilenetv3_large_100_ra-f55367f5.pth",
)
def mobilenetv3_large_100(pretrained: bool) -> nn.Module:
    return _timm("mobilenetv3_large_100.ra_in1k", pretrained)


# timm has no ShuffleNet, so this one comes from torchvision.
@register_encoder(
    feature_dim=1024, source="torchvision",
    pretrained_tag="ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
    reference_file="shufflenetv2_x1-5666bf0f80.pth",
)
def shufflenet_v2_x1_0(pretrained: bool) -> nn.Module:
    from torch import nn
    from torchvision.models import ShuffleNet_V2_X1_0_Weights, shufflenet_v2_x1_0

    weights = ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1 if pretrained else None
    model: nn.Module = shufflenet_v2_x1_0(weights=weights)
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
                               input_size=(arch.input_size, arch.input_size),
                               builder=lambda pretrained: _vae_encoder(arch))


# Trained by the vae stage (`make vae`) on [0, 1] pixels: no ImageNet normalisation, and no
# pretrained weights. The feature is the posterior mean.
@register_encoder(
    feature_dim=DEFAULT_ARCHITECTURE.latent, source="project", pretrained_tag=None, head_keys=(),
    input_size=(DEFAULT_ARCHITECTURE.input_size, DEFAULT_ARCHITECTURE.input_size),
    normalize="none", for_weights=_vae_spec_for_weights,
)
def vae(pretrained: bool) -> nn.Module:
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
                               input_size=(arch.input_size, arch.crop),
                               frame_stack=arch.frame_stack,
                               builder=lambda pretrained: _rad_encoder(arch))


# Trained by the rad stage (`make rad`, DeepMind Control) on [0, 1] pixels of 3 stacked frames,
# 100 px renders centre-cropped to 84 as RAD acts; no pretrained weights exist.
@register_encoder(
    feature_dim=RAD_DEFAULT.feature_dim, source="project", pretrained_tag=None, head_keys=(),
    input_size=(RAD_DEFAULT.input_size, RAD_DEFAULT.crop), normalize="none",
    for_weights=_rad_spec_for_weights, frame_stack=RAD_DEFAULT.frame_stack,
)
def rad(pretrained: bool) -> nn.Module:
    return _rad_encoder(RAD_DEFAULT)
