"""Backbones: feature extractors that map an image batch to a feature vector (our design).

Each backbone module registers a builder ``(image_shape, width) -> nn.Module`` in
:data:`pearl_cl.registry.BACKBONES`; a new backbone is one new module here.

Every backbone is an ``nn.Module`` with an attribute ``feature_dim`` (int) and a forward that
maps ``(N, C, H, W)`` float images to ``(N, feature_dim)`` features. Task heads live outside the
backbone (see :mod:`pearl_cl.core.model`), so every Conv2d and Linear inside a backbone belongs to the
feature extractor and is a candidate for adaptation.
"""

from __future__ import annotations

import math

from torch import nn

from pearl_cl import device
from pearl_cl.errors import ConfigError
from pearl_cl.registry import BACKBONES


def check_width(width: float) -> None:
    """Raise :class:`ConfigError` unless ``width`` (``backbone.width``) is finite and > 0."""
    if not (math.isfinite(width) and width > 0):
        raise ConfigError(f"backbone.width must be finite and > 0, got {width}; try backbone.width=0.5")


def build_backbone(name: str, in_shape: tuple[int, int, int], width: float = 1.0,
                   pretrained: str | None = None) -> nn.Module:
    """Build backbone ``name`` for images of shape ``in_shape`` = (channels, height, width), on
    the current device (:func:`pearl_cl.device.current`; initialised on the CPU, so that every
    device starts from the same weights).

    ``width`` multiplies the number of channels (resnet18, separable-cnn), hidden units (mlp)
    or the embedding (vit-tiny); efficientnet-lite0 has one size and ignores it. ``pretrained``
    (a checkpoint path, or ``imagenet`` for efficientnet-lite0) is loaded by
    :func:`~pearl_cl.backbones.pretrained.load_pretrained`; None keeps the random initialisation.

    Raises:
        ConfigError: unknown ``name``, non-positive ``width``, images the backbone cannot take,
            or a checkpoint that does not fit.
    """
    from pearl_cl.backbones.pretrained import load_pretrained

    check_width(width)
    backbone = BACKBONES.get(name)(in_shape, width)
    if pretrained is not None:
        load_pretrained(backbone, pretrained, name)
    return backbone.to(device.current())


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
