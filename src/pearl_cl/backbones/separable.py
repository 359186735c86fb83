"""A depthwise-separable CNN for small images, in the style of MobileNet v1, trained from scratch.

Source: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications" (2017), §3.1: each block is a 3×3 depthwise convolution and a 1×1 pointwise
convolution, each followed by BatchNorm and ReLU. Our own ~30 lines rather than timm's
MobileNets because those are ImageNet-shaped (a stride-2 stem and five stride-2 stages for
224-pixel inputs would leave 28×28 MNIST images at 1×1 after the third stage); this one keeps
a stride-1 stem and three stride-2 blocks, like the reduced ResNet-18 of the CL literature.

Adapted layers (``pearl_cl.backbones.adaptable_layers``) are the full 3×3 stem convolution and
every pointwise convolution; the depthwise convolutions stay frozen after the reference task,
because PEFT's LoRA cannot merge into grouped convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from pearl_cl.registry import BACKBONES

# (output channels at width 1, stride) of each depthwise-separable block
BLOCKS: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → ReLU; the conv is ``[0]``."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU())


class SeparableCNN(nn.Module):
    """``(N, in_channels, H, W)`` → ``(N, round(512·width))`` features.

    A 3×3 stem of ``round(32·width)`` channels, then the blocks of :data:`BLOCKS` (channels
    times ``width``), each ``dw`` (depthwise 3×3) then ``pw`` (pointwise 1×1), then global
    average pooling.
    """

    def __init__(self, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c_in = max(1, round(32 * width))
        self.stem = _conv_bn_relu(in_channels, c_in, 3, 1)
        blocks = []
        for channels, stride in BLOCKS:
            c_out = max(1, round(channels * width))
            block = nn.Sequential()
            block.add_module("dw", _conv_bn_relu(c_in, c_in, 3, stride, groups=c_in))
            block.add_module("pw", _conv_bn_relu(c_in, c_out, 1, 1))
            blocks.append(block)
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)


@BACKBONES.register("separable-cnn")
def build_separable_cnn(in_shape: tuple[int, int, int], width: float = 1.0) -> SeparableCNN:
    """:class:`SeparableCNN` for ``in_shape`` = (C, H, W) images."""
    return SeparableCNN(in_channels=in_shape[0], width=width)
