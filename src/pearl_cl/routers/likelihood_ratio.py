"""``likelihood-ratio``: one pass, no branch: each task's likelihood against that of the other
tasks, from class Gaussians in a fixed random-feature space of the images.

Our design, from three sources: the random projection with a ReLU of RanPAC (McDonnell et al.,
"RanPAC: Random Projections and Pre-trained Models for Continual Learning", NeurIPS 2023, Sec. 4);
class Gaussians sharing one covariance pooled over every class seen, i.e. the generative
classifier of linear discriminant analysis; and task identification as a likelihood ratio of the
task against the rest (Lin et al., "TPL", ICLR 2024, where the rest comes from a buffer; here
from the other tasks' statistics only). The score of task t for an image with random features h is

    log Σ_{k ∈ t} N(h; μ_k, Σ) − log Σ_{k ∉ t} N(h; μ_k, Σ)

over the classes k of all tasks learned, with Σ the pooled within-class covariance shrunk by
``routing.shrinkage``. All tasks are scored in one space with one metric, so no calibration is
needed. Per task it keeps ``K × M`` class means and an ``M × M`` scatter matrix (float32;
``M = routing.random_features``); the projection itself is drawn again from a fixed seed.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

from pearl_cl.errors import ConfigError
from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import Router
from pearl_cl.routers.statistics import TaskFeatures, TaskStatistics, shrunk_covariance, streamed_class_statistics

SEED = 0
"""Seed of the random projection (the same for every run, so saved statistics stay readable)."""


_projection: dict = {}
"""The last projection drawn, ``{(d, width, device): W}``: routing and statistics reuse it instead
of drawing d·width numbers again (98 MB for 64×64 RGB images at M = 2,000, which, drawn and freed
at every call, left the process's peak memory creeping up task after task)."""


def projection(d: int, width: int, where: torch.device) -> torch.Tensor:
    """W ``(d, width)`` with N(0, 1/d) entries drawn on the CPU from :data:`SEED`, on device ``where``."""
    key = (d, width, str(where))
    if key not in _projection:
        _projection.clear()
        weight = torch.randn(d, width, generator=torch.Generator().manual_seed(SEED)) / d**0.5
        _projection[key] = weight.to(where)
    return _projection[key]


def random_feature_batches(images, width: int, batch_size: int = 512) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(rows, h)`` for each batch of ``batch_size`` images: h ``(B, width)`` float64 features
    ReLU(x·W), on the CPU, of the rows of ``(N, C, H, W)`` images (a tensor, or
    :class:`~pearl_cl.data.pixels.NormalisedImages` read a batch at a time) or ``(N, d)`` vectors,
    flattened to x of length d = C·H·W; W is :func:`projection` (the same for every call; the
    product runs on the images' device)."""
    d = math.prod(images.shape[1:])
    for s in range(0, len(images), batch_size):
        x = images[s : s + batch_size].flatten(1).float()
        yield slice(s, s + len(x)), torch.relu(x @ projection(d, width, x.device)).double().cpu()


def random_features(images, width: int) -> torch.Tensor:
    """``(N, width)``: every batch of :func:`random_feature_batches`, one after another."""
    parts = [h for _, h in random_feature_batches(images, width)]
    return torch.cat(parts) if parts else torch.zeros(0, width, dtype=torch.float64)


_pooled: list = []
"""The last :func:`pooled` result with the statistics it came from (kept alive, so identity
comparison is safe; T·M² floats until the next call with other tasks): routing batch after batch
among the same tasks factorises once. Saved statistics are never changed in place."""


def pooled(stats: list[dict[str, torch.Tensor]], shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(M, M)`` Cholesky factor C of the pooled within-class covariance of ``stats``
    (shrunk by ``shrinkage``) and the ``(ΣK, M)`` class means whitened by it, C⁻¹·μ.

    Raises:
        ConfigError: the covariance is singular (no shrinkage and fewer images than M).
    """
    if _pooled and _pooled[0] == shrinkage and len(_pooled[1]) == len(stats) and all(
            a is b for a, b in zip(_pooled[1], stats)):
        return _pooled[2], _pooled[3]
    means = torch.cat([s["means"].double() for s in stats])
    scatter = torch.zeros_like(stats[0]["scatter"], dtype=torch.float64)
    for s in stats:
        scatter.add_(s["scatter"])
    count = int(sum(s["count"][0] for s in stats))
    chol, info = torch.linalg.cholesky_ex(shrunk_covariance(scatter, count, shrinkage))
    if int(info):
        raise ConfigError("the likelihood-ratio router's pooled covariance is singular; set routing.shrinkage "
                          "above 0 (default 0.001)")
    whitened = torch.linalg.solve_triangular(chol, means.T, upper=False).T
    _pooled[:] = [shrinkage, list(stats), chol, whitened]
    return chol, whitened


def likelihood_ratios(h: torch.Tensor, stats: list[dict[str, torch.Tensor]], shrinkage: float) -> torch.Tensor:
    """``(T, N)`` log-likelihood ratio of each task against the rest for ``(N, M)`` random
    features ``h``, from each task's kept ``means``, ``scatter`` and ``count``; with one task
    the ratio is its log-likelihood up to a constant (there is no rest)."""
    owner = torch.cat([torch.full((len(s["means"]),), t) for t, s in enumerate(stats)])
    chol, m = pooled(stats, shrinkage)
    z = torch.linalg.solve_triangular(chol, h.T, upper=False).T
    loglik = -0.5 * torch.cdist(z, m).pow(2)
    own = torch.stack([torch.logsumexp(loglik[:, owner == t], dim=1) for t in range(len(stats))])
    if len(stats) == 1:
        return own
    rest = torch.stack([torch.logsumexp(loglik[:, owner != t], dim=1) for t in range(len(stats))])
    return own - rest


@ROUTERS.register("likelihood-ratio", default=True)
class LikelihoodRatio(Router):
    """One-pass router: the task with the largest likelihood ratio against the other tasks."""

    per_branch = False
    keeps = True
    needs_network = False

    def fit(self, data: TaskFeatures, routing) -> dict[str, torch.Tensor]:
        """``means`` ``(K, M)``, within-class ``scatter`` ``(M, M)`` (float32) and ``count``
        ``(1,)`` of every training image's random features (no network pass; one batch of
        features held at a time, so the memory does not grow with the task's images)."""
        batches = ((h, data.input_labels[rows]) for rows, h in random_feature_batches(data.inputs, routing.random_features))
        means, scatter = streamed_class_statistics(batches, data.n_classes)
        return {"means": means.float(), "scatter": scatter.float(), "count": torch.tensor([len(data.input_labels)])}

    def choose(self, x: torch.Tensor, ref_features: Callable[[], torch.Tensor], stats: list[TaskStatistics],
               routing, true_task: torch.Tensor | None) -> torch.Tensor:
        """``(N,)`` the task with the largest likelihood ratio for images ``x``."""
        kept = [s.of(self.name) for s in stats]
        h = random_features(x, kept[0]["scatter"].shape[0])
        return likelihood_ratios(h, kept, routing.shrinkage).argmax(dim=0)
