"""The reduced ResNet-18 used across the continual-learning literature.

Source: Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning" (NeurIPS 2017),
and the mammoth and Avalanche CL libraries after it: a ResNet-18 (BasicBlock, [2, 2, 2, 2]) with
``nf = 20`` base channels instead of 64, a 3×3 stride-1 stem without max-pooling (for 32×32×3
CIFAR images and 28×28×1 MNIST images alike), and global average pooling. Channel counts are
``nf, 2nf, 4nf, 8nf``; the feature dimension is ``8nf`` (160 at width 1).
"""

from __future__ import annotations

import torch
from torch import nn

from pearl_cl.registry import BACKBONES


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    """Conv (no bias) then BatchNorm; the conv is ``[0]`` and the norm ``[1]``."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity or 1×1 conv-BN shortcut (He et al., 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ReducedResNet18(nn.Module):
    """Reduced ResNet-18: ``(N, in_channels, H, W)`` → ``(N, 8·nf)`` with ``nf = round(20·width)``."""

    def __init__(self, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        nf = max(1, round(20 * width))
        self.stem = _conv_bn(in_channels, nf, 3, 1)
        stages = []
        c_in = nf
        for i, c_out in enumerate((nf, 2 * nf, 4 * nf, 8 * nf)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = 8 * nf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.stem(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)


@BACKBONES.register("resnet18", default=True)
def build_resnet18(in_shape: tuple[int, int, int], width: float = 1.0) -> ReducedResNet18:
    """:class:`ReducedResNet18` for ``in_shape`` = (C, H, W) images."""
    return ReducedResNet18(in_channels=in_shape[0], width=width)
