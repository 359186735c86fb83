"""``entropy``: minus the entropy of the head's softmax divided by log K (K = the head's
classes), so a confident branch scores near 0 and a uniform one −1 (our design)."""

from __future__ import annotations

import torch

from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import Router


@ROUTERS.register("entropy")
class Entropy(Router):
    """Per-branch normalised negative entropy."""

    legacy_row = 3

    def score(self, logits: torch.Tensor, features: torch.Tensor, kept: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N, K)`` logits → ``(N,)`` minus the softmax entropy divided by log K (in [−1, 0])."""
        logp = torch.log_softmax(logits, dim=1)
        entropy = -(logp.exp() * logp).sum(dim=1)
        return -entropy / max(torch.log(torch.tensor(float(logits.shape[1]))).item(), 1e-12)
