"""Backbones built by timm: EfficientNet-Lite0 and a ViT-Tiny.

timm builds the network with its classifier removed (``num_classes=0``), so its forward maps
``(N, C, H, W)`` images to pooled ``(N, num_features)`` features, which we expose as
``feature_dim``. No wrapper module sits in between, so layer names are timm's own
(``blocks.1.0.conv_pw``, ``blocks.3.attn.qkv``) and a timm checkpoint loads by name.

* ``efficientnet-lite0``: timm's ``tf_efficientnet_lite0`` (Tan & Le, "EfficientNet", ICML 2019;
  the Lite variants drop squeeze-and-excitation and use ReLU6). TensorFlow "same" padding, as
  the published weights were trained with. Adapted layers: the stem, every pointwise (1×1)
  convolution and the head convolution; the depthwise convolutions stay frozen (PEFT cannot
  merge LoRA into grouped convolutions).
* ``vit-tiny``: timm's ``vit_tiny_patch16_224`` architecture, ViT-Ti (Touvron et al., DeiT, 2021:
  12 blocks, 3 heads, embedding 192) at ``width`` 1; the embedding is ``3·round(64·width)``.
  The patch size is the largest of 16, 8, 4, 2 that divides the image side and leaves at least
  7 patches per side (16 for 224-pixel images, 4 for 28- and 32-pixel ones). Adapted layers:
  the patch embedding and every Linear (attention ``qkv`` and ``proj``, MLP ``fc1`` and ``fc2``).
"""

from __future__ import annotations

from torch import nn

from pearl_cl.errors import ConfigError
from pearl_cl.registry import BACKBONES

PATCH_SIZES = (16, 8, 4, 2)


@BACKBONES.register("efficientnet-lite0")
def efficientnet_lite0(in_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` for ``in_shape`` = (C, H, W) images, randomly initialised
    (one size: ``width`` is ignored); ``(N, C, H, W)`` → ``(N, 1280)``. Load weights with :func:`pearl_cl.backbones.pretrained.load_pretrained`."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, in_chans=in_shape[0])
    model.feature_dim = model.num_features
    return model


def vit_patch_size(side: int) -> int:
    """The ViT patch size for square images of ``side`` pixels (rule in the module docstring).

    Raises:
        ConfigError: no patch size in :data:`PATCH_SIZES` fits (side below 14 or odd).
    """
    for patch in PATCH_SIZES:
        if side % patch == 0 and side // patch >= 7:
            return patch
    raise ConfigError(f"vit-tiny needs square images whose side is a multiple of 2 and at least 14 pixels, got {side}; "
                      f"choose another backbone.name (resnet18, separable-cnn)")


@BACKBONES.register("vit-tiny")
def vit_tiny(in_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """A ViT-Ti-shaped timm ``VisionTransformer`` for ``in_shape`` = (C, H, W) images;
    ``(N, C, H, W)`` → ``(N, 3·round(64·width))`` (the class token's final embedding).

    Raises:
        ConfigError: images that are not square, or too small for a patch size.
    """
    import timm

    channels, height, side = in_shape
    if height != side:
        raise ConfigError(f"vit-tiny needs square images, got {height}×{side}; choose another backbone.name")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=side, patch_size=vit_patch_size(side),
                              in_chans=channels, num_classes=0, embed_dim=3 * max(1, round(64 * width)))
    model.feature_dim = model.num_features
    return model
