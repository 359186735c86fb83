"""``energy``: logsumexp of the head's logits, minus the free energy at temperature 1 (Liu et
al., "Energy-based Out-of-distribution Detection", NeurIPS 2020)."""

from __future__ import annotations

import torch

from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import Router


@ROUTERS.register("energy")
class Energy(Router):
    """Per-branch energy score."""

    legacy_row = 1

    def score(self, logits: torch.Tensor, features: torch.Tensor, kept: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N, K)`` logits → ``(N,)`` logsumexp."""
        return torch.logsumexp(logits, dim=1)
