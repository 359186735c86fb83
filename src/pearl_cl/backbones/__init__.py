"""Backbones: feature extractors that map an image batch to a feature vector (our design).

Every backbone is an ``nn.Module`` with an attribute ``feature_dim`` (int) and a forward that
maps ``(N, C, H, W)`` float images to ``(N, feature_dim)`` features. Task heads live outside the
backbone (see :mod:`pearl_cl.core.model`), so every Conv2d and Linear inside a backbone belongs to the
feature extractor and is a candidate for adaptation.
"""

from __future__ import annotations

import math

from torch import nn

from pearl_cl.backbones.mlp import MLP
from pearl_cl.backbones.pretrained import load_pretrained
from pearl_cl.backbones.resnet import ReducedResNet18
from pearl_cl.backbones.separable import SeparableCNN
from pearl_cl.backbones.timm_models import efficientnet_lite0, vit_tiny
from pearl_cl.errors import ConfigError

BACKBONES = ("resnet18", "mlp", "separable-cnn", "efficientnet-lite0", "vit-tiny")


def check_width(width: float) -> None:
    """Raise :class:`ConfigError` unless ``width`` (``backbone.width``) is finite and > 0."""
    if not (math.isfinite(width) and width > 0):
        raise ConfigError(f"backbone.width must be finite and > 0, got {width}; try backbone.width=0.5")


def build_backbone(name: str, in_shape: tuple[int, int, int], width: float = 1.0,
                   pretrained: str | None = None) -> nn.Module:
    """Build backbone ``name`` for images of shape ``in_shape`` = (channels, height, width).

    ``width`` multiplies the number of channels (resnet18, separable-cnn), hidden units (mlp)
    or the embedding (vit-tiny); efficientnet-lite0 has one size and ignores it. ``pretrained``
    (a checkpoint path, or ``imagenet`` for efficientnet-lite0) is loaded by
    :func:`~pearl_cl.backbones.pretrained.load_pretrained`; None keeps the random initialisation.

    Raises:
        ConfigError: unknown ``name``, non-positive ``width``, images the backbone cannot take,
            or a checkpoint that does not fit.
    """
    check_width(width)
    channels = in_shape[0]
    builders = {
        "resnet18": lambda: ReducedResNet18(in_channels=channels, width=width),
        "mlp": lambda: MLP(in_features=channels * in_shape[1] * in_shape[2], width=width),
        "separable-cnn": lambda: SeparableCNN(in_channels=channels, width=width),
        "efficientnet-lite0": lambda: efficientnet_lite0(in_shape),
        "vit-tiny": lambda: vit_tiny(in_shape, width),
    }
    if name not in builders:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    backbone = builders[name]()
    if pretrained is not None:
        load_pretrained(backbone, pretrained, name)
    return backbone


def adaptable_layers(backbone: nn.Module) -> dict[str, nn.Module]:
    """Name → module of every Linear and ungrouped Conv2d of a plain (not PEFT-wrapped) backbone."""
    return {
        name: module
        for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
    }


def norm_layers(backbone: nn.Module) -> list[str]:
    """Names of every BatchNorm layer of a plain backbone (each task gets its own copy)."""
    return [name for name, module in backbone.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
