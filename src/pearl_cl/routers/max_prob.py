"""``max_prob``: the largest softmax probability of the branch's head (Hendrycks & Gimpel, "A
Baseline for Detecting Misclassified and Out-of-Distribution Examples", ICLR 2017)."""

from __future__ import annotations

import torch

from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import Router


@ROUTERS.register("max_prob")
class MaxProb(Router):
    """Per-branch maximum softmax probability."""

    legacy_row = 2

    def score(self, logits: torch.Tensor, features: torch.Tensor, kept: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N, K)`` logits → ``(N,)`` largest softmax probability."""
        return torch.softmax(logits, dim=1).max(dim=1).values
