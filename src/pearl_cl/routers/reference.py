"""``reference``: one pass through the frozen reference branch only; the Mahalanobis score
against every task's class means in that one feature space, with a covariance pooled over all
classes seen, so the cost of choosing does not grow with T (our design). It needs no
calibration: all tasks are scored with one metric in one space."""

from __future__ import annotations

from typing import Callable

import torch

from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import Router
from pearl_cl.routers.statistics import TaskFeatures, TaskStatistics, class_statistics, score_mahalanobis, shrunk_precision, whitening


def reference_scores(ref_features: torch.Tensor, stats: list[TaskStatistics], shrinkage: float) -> torch.Tensor:
    """``(T, N)`` scores: minus the smallest squared Mahalanobis distance of ``(N, D_ref)``
    reference features to each task's class means in the reference space, with the covariance
    pooled over all T tasks (shrunk by ``shrinkage``)."""
    kept = [s.of("reference") for s in stats]
    scatter = sum(k["scatter"] for k in kept)
    count = int(sum(k["count"][0] for k in kept))
    factor = whitening(shrunk_precision(scatter, count, shrinkage))
    x = ref_features.double()
    return torch.stack([score_mahalanobis(x, k["means"], factor) for k in kept])


@ROUTERS.register("reference")
class Reference(Router):
    """One-pass router on the reference branch's features."""

    per_branch = False
    keeps = True

    def fit(self, data: TaskFeatures, routing) -> dict[str, torch.Tensor]:
        """``means`` ``(K, D_ref)`` and within-class ``scatter`` ``(D_ref, D_ref)`` of the
        reference features, and their ``count`` ``(1,)``."""
        means, scatter = class_statistics(data.reference, data.labels, data.n_classes)
        return {"means": means, "scatter": scatter, "count": torch.tensor([len(data.labels)])}

    def from_legacy(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``router.ref_means``, ``router.ref_scatter`` and ``router.ref_count``."""
        return {"means": tensors["router.ref_means"], "scatter": tensors["router.ref_scatter"],
                "count": tensors["router.ref_count"]}

    def choose(self, x: torch.Tensor, ref_features: Callable[[], torch.Tensor], stats: list[TaskStatistics],
               routing, true_task: torch.Tensor | None) -> torch.Tensor:
        """``(N,)`` the task whose class means lie nearest in the reference space."""
        return reference_scores(ref_features(), stats, routing.shrinkage).argmax(dim=0)
