"""``fecam``: per-class Gaussians with their own covariances on power-transformed features, after
FeCAM (Goswami et al., "FeCAM: Exploiting the Heterogeneity of Class Distributions in
Exemplar-Free Continual Learning", NeurIPS 2023, Sec. 4: a Tukey power transform of the
features, one shrunk covariance per class, the nearest class by Mahalanobis distance). Here on a
branch's features joined with the reference branch's, scored per branch and calibrated like
:mod:`~pearl_cl.routers.mahalanobis`; the shrinkage is ``routing.shrinkage`` towards a scaled
identity (:func:`~pearl_cl.routers.statistics.shrunk_covariance`) rather than FeCAM's two-term
target, which routed worse on split-mnist (``benchmarks/routers.py``, README Routing).
"""

from __future__ import annotations

import torch

from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import Router
from pearl_cl.routers.statistics import TaskFeatures, mahalanobis_sq, shrunk_precision, whitening

POWER = 0.5
"""Tukey's ladder-of-powers exponent (FeCAM's β = 0.5)."""


def tukey(features: torch.Tensor, power: float = POWER) -> torch.Tensor:
    """``sign(x)·|x|^power`` element-wise, float64 (Tukey's transform, made odd so that features
    of either sign keep their order)."""
    features = features.double()
    return features.sign() * features.abs().pow(power)


@ROUTERS.register("fecam")
class FeCAM(Router):
    """Per-branch nearest class under per-class covariances of Tukey-transformed joined features."""

    keeps = True
    uses_reference_features = True

    def fit(self, data: TaskFeatures, routing) -> dict[str, torch.Tensor]:
        """``means`` ``(K, D)`` of the transformed joined features and ``factors`` ``(K, D, D)``,
        each class's :func:`~pearl_cl.routers.statistics.whitening` factor of its own
        covariance shrunk by ``routing.shrinkage``."""
        x = tukey(data.joint)
        means, factors = [], []
        for k in range(data.n_classes):
            own = x[data.labels == k]
            mean = own.mean(dim=0)
            centred = own - mean
            means.append(mean)
            factors.append(whitening(shrunk_precision(centred.T @ centred, len(own), routing.shrinkage)))
        return {"means": torch.stack(means), "factors": torch.stack(factors)}

    def score(self, logits: torch.Tensor, features: torch.Tensor, kept: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(N,)`` minus the smallest squared distance to a class mean, each under its class's covariance."""
        x = tukey(features)
        return -torch.stack([mahalanobis_sq(x, mean[None], factor)[:, 0]
                             for mean, factor in zip(kept["means"], kept["factors"])], dim=1).min(dim=1).values
