"""Backbones: feature extractors that map an image batch to a feature vector (our design).

Every backbone is an ``nn.Module`` with an attribute ``feature_dim`` (int) and a forward that
maps ``(N, C, H, W)`` float images to ``(N, feature_dim)`` features. Task heads live outside the
backbone (see :mod:`pearl_cl.model`), so every Conv2d and Linear inside a backbone belongs to the
feature extractor and is a candidate for adaptation.
"""

from __future__ import annotations

import math

from torch import nn

from pearl_cl.backbones.mlp import MLP
from pearl_cl.backbones.resnet import ReducedResNet18
from pearl_cl.errors import ConfigError

BACKBONES = ("resnet18", "mlp")


def check_width(width: float) -> None:
    """Raise :class:`ConfigError` unless ``width`` (``backbone.width``) is finite and > 0."""
    if not (math.isfinite(width) and width > 0):
        raise ConfigError(f"backbone.width must be finite and > 0, got {width}; try backbone.width=0.5")


def build_backbone(name: str, in_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """Build backbone ``name`` for images of shape ``in_shape`` = (channels, height, width).

    ``width`` multiplies the number of channels (resnet18) or hidden units (mlp).

    Raises:
        ConfigError: unknown ``name`` or non-positive ``width``.
    """
    check_width(width)
    if name == "resnet18":
        return ReducedResNet18(in_channels=in_shape[0], width=width)
    if name == "mlp":
        return MLP(in_features=in_shape[0] * in_shape[1] * in_shape[2], width=width)
    raise ConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")


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
