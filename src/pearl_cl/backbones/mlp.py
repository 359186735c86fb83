"""The 2×400 ReLU MLP of the Split-MNIST literature.

Source: the network used for Split-MNIST by Hsu et al., "Re-evaluating Continual Learning
Scenarios" (2018) and van de Ven & Tolias, "Three scenarios for continual learning" (2019):
two fully connected hidden layers of 400 units with ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from pearl_cl.registry import BACKBONES


class MLP(nn.Module):
    """Two hidden Linear layers (``fc1``, ``fc2``) of ``round(400·width)`` units with ReLU.

    Input ``(N, C, H, W)`` is flattened to ``(N, in_features)``; output ``(N, feature_dim)``.
    """

    def __init__(self, in_features: int, width: float = 1.0) -> None:
        super().__init__()
        hidden = max(1, round(400 * width))
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.feature_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return torch.relu(self.fc2(x))


@BACKBONES.register("mlp")
def build_mlp(in_shape: tuple[int, int, int], width: float = 1.0) -> MLP:
    """:class:`MLP` over flattened ``in_shape`` = (C, H, W) images."""
    return MLP(in_features=in_shape[0] * in_shape[1] * in_shape[2], width=width)
