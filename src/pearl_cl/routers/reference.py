"""``reference``: one pass through the frozen reference branch only; the Mahalanobis score
against every task's class means in that one feature space, with a covariance pooled over all
classes seen, so the cost of choosing does not grow with T (our design). It needs no
calibration: all tasks are scored with one metric in one space."""

from __future__ import annotations

from typing import Callable

import torch

from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import Router
from pearl_cl.routers.statistics import TaskStatistics, score_mahalanobis, shrunk_precision, whitening


def reference_scores(ref_features: torch.Tensor, stats: list[TaskStatistics], shrinkage: float) -> torch.Tensor:
    """``(T, N)`` scores: minus the smallest squared Mahalanobis distance of ``(N, D_ref)``
    reference features to each task's class means in the reference space, with the covariance
    pooled over all T tasks (shrunk by ``shrinkage``)."""
    scatter = sum(s.ref_scatter for s in stats)
    count = sum(s.ref_count for s in stats)
    factor = whitening(shrunk_precision(scatter, count, shrinkage))
    x = ref_features.double()
    return torch.stack([score_mahalanobis(x, s.ref_means, factor) for s in stats])


@ROUTERS.register("reference")
class Reference(Router):
    """One-pass router on the reference branch's features."""

    per_branch = False

    def choose(self, ref_features: Callable[[], torch.Tensor], stats: list[TaskStatistics], shrinkage: float,
               true_task: torch.Tensor | None) -> torch.Tensor:
        """``(N,)`` the task whose class means lie nearest in the reference space."""
        return reference_scores(ref_features(), stats, shrinkage).argmax(dim=0)
