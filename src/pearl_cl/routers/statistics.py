"""What the routers keep of a task, what they compute it from, and the distance maths they
share (our design; sources per function).

At the end of each task, :func:`task_statistics` sends a sample of the task's training images
(``routing.sample``) and its validation images once through the task's branch and the reference
branch (:class:`TaskFeatures`), and every registered router fits its own statistics from them
(:meth:`~pearl_cl.routers.base.Router.fit`): class means, covariances, counts; never an image, a
feature vector or a sample. Calibration (our design): a branch's raw scores on its own task's
images differ in scale between branches, so each per-branch router's scores are standardised
with the mean and standard deviation of that branch's scores on the task's own validation split.

Devices (our design): the network runs on the run's device (:mod:`pearl_cl.device`) and its
features and logits come back to the CPU as float32 (:func:`_features`, :func:`branch_logits`);
the routers fit and score there, in float64 where they invert covariances (fp64 is slow on most
GPUs, and the statistics are what was measured on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from pearl_cl import device
from pearl_cl.data.pixels import NormalisedImages
from pearl_cl.errors import ConfigError
from pearl_cl.learning.training import EVAL_BATCH
from pearl_cl.registry import ROUTERS


def whitening(precision: torch.Tensor) -> torch.Tensor:
    """Lower-triangular ``(D, D)`` L with L·Lᵀ = ``precision`` (Cholesky), so that the squared
    Mahalanobis distance of x to μ is ‖(x − μ)·L‖².

    Raises:
        ConfigError: ``precision`` is not positive definite (a singular covariance without shrinkage).
    """
    factor, info = torch.linalg.cholesky_ex(precision)
    if int(info):
        raise ConfigError("the routers' feature covariance is singular; set routing.shrinkage above 0 (default 0.001)")
    return factor


def mahalanobis_sq(features: torch.Tensor, means: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distances ``(N, K)`` of ``(N, D)`` features to ``(K, D)`` means under
    the precision L·Lᵀ, given its ``(D, D)`` :func:`whitening` factor L: both sides are whitened
    once (one ``(N, D)·(D, D)`` product), not once per mean: K times less work (3.9 → 1.9 ms for
    512 images, 2 means, D = 400 in float64 on 2 CPU cores; on the MLP this product costs more
    than the network's forward pass)."""
    z, m = features @ factor, means @ factor
    return (z[:, None, :] - m[None, :, :]).pow(2).sum(dim=2)


def score_mahalanobis(features: torch.Tensor, means: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``(N,)`` minus the smallest squared Mahalanobis distance to any of the task's class means
    (``factor``: the precision's :func:`whitening` factor)."""
    return -mahalanobis_sq(features, means, factor).min(dim=1).values


def shrunk_covariance(scatter: torch.Tensor, count: int, shrinkage: float) -> torch.Tensor:
    """The covariance ``scatter / count`` shrunk towards a scaled identity:
    Σ = (1 − s)·S + s·(tr S / D)·I (our design, a fixed Ledoit–Wolf-style target), which keeps
    Σ invertible when D exceeds the number of images. ``scatter`` is ``(D, D)``, float64. One
    ``(D, D)`` result and no other: for the random features (D = 2,000) each copy is 32 MB."""
    cov = scatter / max(count, 1)
    d = cov.shape[0]
    level = float((torch.trace(cov) / d).clamp_min(1e-12))
    cov.mul_(1 - shrinkage).diagonal().add_(shrinkage * level)
    return cov


def shrunk_precision(scatter: torch.Tensor, count: int, shrinkage: float) -> torch.Tensor:
    """Inverse of :func:`shrunk_covariance`, ``(D, D)``."""
    return torch.linalg.inv(shrunk_covariance(scatter, count, shrinkage))


def class_statistics(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``(K, D)`` and the within-class scatter matrix ``(D, D)`` (float64) of
    ``(N, D)`` features with labels ``(N,)`` in ``[0, K)``."""
    features = features.double()
    means = torch.stack([features[labels == k].mean(dim=0) for k in range(n_classes)])
    centred = features - means[labels]
    return means, centred.T @ centred


def streamed_class_statistics(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], n_classes: int
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`class_statistics` of features that arrive in ``(B, D)`` batches with their ``(B,)``
    labels, holding one batch at a time: per-class sums and Σ x·xᵀ are summed in float64 and the
    within-class scatter is Σ x·xᵀ − Σ_k n_k·μ_k·μ_kᵀ (the same numbers as centring first, up to
    float64 rounding). Every class needs at least one feature vector."""
    sums = second = None
    counts = torch.zeros(n_classes, dtype=torch.float64)
    for features, labels in batches:
        features = features.double()
        if sums is None:
            sums = features.new_zeros(n_classes, features.shape[1])
            second = features.new_zeros(features.shape[1], features.shape[1])
        sums.index_add_(0, labels, features)
        second.addmm_(features.T, features)
        counts += torch.bincount(labels, minlength=n_classes).double()
    means = sums / counts[:, None]
    return means, second - sums.T @ means


@dataclass
class TaskFeatures:
    """What one task's router statistics are computed from (held only while they are computed).

    Attributes:
        labels: ``(N,)`` local labels of the training sample (``routing.sample`` images, or all).
        n_classes: K, the task's number of classes.
        joint: ``(N, D + D_ref)`` the sample's features through the task's branch joined with the
            reference branch's (:func:`joint_features`).
        reference: ``(N, D_ref)`` the sample's features through the reference branch.
        inputs: ``(N_all, C, H, W)`` every training image (indexed a batch at a time; no network pass).
        input_labels: ``(N_all,)`` their local labels.
        val_logits: ``(N_val, K)`` the task's head on its validation images (for calibration).
        val_branch: ``(N_val, D)`` their features through the task's branch.
        val_joint: ``(N_val, D + D_ref)`` those joined with the reference branch's.
    """

    labels: torch.Tensor
    n_classes: int
    joint: torch.Tensor
    reference: torch.Tensor
    inputs: torch.Tensor
    input_labels: torch.Tensor
    val_logits: torch.Tensor
    val_branch: torch.Tensor
    val_joint: torch.Tensor


@dataclass
class TaskStatistics:
    """What the routers keep of one task: statistics only (no images, features or samples).

    Attributes:
        routers: router name → its tensors (:meth:`~pearl_cl.routers.base.Router.fit`).
        calibration: per-branch router name → ``(2,)`` mean and standard deviation of its score
            on the task's validation split.
    """

    routers: dict[str, dict[str, torch.Tensor]]
    calibration: dict[str, torch.Tensor]

    def of(self, name: str) -> dict[str, torch.Tensor]:
        """Router ``name``'s tensors.

        Raises:
            ConfigError: the task was learned without that router's statistics (names the ones kept).
        """
        if name not in self.routers:
            if not ROUTERS.get(name).keeps:
                return {}
            usable = sorted(n for n, r in ROUTERS.items() if n in self.routers or not r.keeps)
            raise ConfigError(f"the saved task statistics have nothing for router {name!r} (the run was learned "
                              f"without it; routing.fit_all=true keeps every router's); choose routing.router from: "
                              f"{', '.join(usable)}")
        return self.routers[name]

    def nbytes(self, name: str) -> int:
        """Bytes router ``name`` keeps for this task (its tensors and calibration row)."""
        kept = list(self.of(name).values()) + ([self.calibration[name]] if name in self.calibration else [])
        return sum(t.numel() * t.element_size() for t in kept)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors file: ``router.<name>.<key>`` and
        ``router.calibration.<name>``."""
        flat = {f"router.{name}.{key}": value.contiguous() for name, kept in self.routers.items()
                for key, value in kept.items()}
        return {**flat, **{f"router.calibration.{name}": row for name, row in self.calibration.items()}}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TaskStatistics:
        """Inverse of :meth:`to_tensors`, on the CPU (keys outside ``router.*`` are ignored). Files of pearl-cl
        0.1 and 0.2 keep one set of tensors (``router.means``, ``router.ref_scatter``, …) and 0.1 one
        ``(R, 2)`` calibration tensor; each router's ``from_legacy`` and ``legacy_row`` read them."""
        tensors = {k: v.cpu() for k, v in tensors.items() if k.startswith("router.")}
        calibration = {k.removeprefix("router.calibration."): v for k, v in tensors.items()
                       if k.startswith("router.calibration.")}
        if "router.calibration" in tensors:
            rows = tensors["router.calibration"]
            calibration = {name: rows[router.legacy_row] for name, router in ROUTERS.items()
                           if router.legacy_row is not None and router.legacy_row < len(rows)}
        routers: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            parts = key.split(".", 2)
            if len(parts) == 3 and parts[0] == "router" and parts[1] != "calibration":
                routers.setdefault(parts[1], {})[parts[2]] = value
        if "router.means" in tensors:
            for name, router in ROUTERS.items():
                kept = router().from_legacy(tensors)
                if kept is not None:
                    routers[name] = kept
        return cls(routers, calibration)


def calibration_row(scores: torch.Tensor) -> torch.Tensor:
    """``(2,)`` mean and standard deviation (floored at 1e-6) of ``(N,)`` validation scores."""
    scores = scores.double()
    std = scores.std() if len(scores) > 1 else torch.tensor(1.0, dtype=torch.float64)
    return torch.stack([scores.mean(), std.clamp_min(1e-6)])


def joint_features(features: torch.Tensor, ref_features: torch.Tensor, is_reference: bool) -> torch.Tensor:
    """A branch's ``(N, D)`` features joined with the reference branch's ``(N, D_ref)`` ones,
    ``(N, D + D_ref)``; the reference task's own branch keeps just its ``(N, D_ref)`` features."""
    return ref_features if is_reference else torch.cat([features, ref_features], dim=1)


def _features(model, x: torch.Tensor, task: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, D)`` features and ``(N, K)`` logits of task ``task``'s branch, in batches, eval mode,
    computed on the run's device in its precision, returned on the CPU as float32."""
    feats, logits = [], []
    for start in range(0, len(x), batch_size):
        with device.autocast():
            f = model.features(device.to_current(x[start : start + batch_size]), task)
            out = model.heads[task](f)
        feats.append(f.float().cpu())
        logits.append(out.float().cpu())
    return torch.cat(feats), torch.cat(logits)


def branch_logits(model, x: torch.Tensor, task: str, head_only: bool = False) -> torch.Tensor:
    """``(N, K)`` logits of task ``task``'s branch and head for images ``x`` ``(N, C, H, W)``, or
    with ``head_only`` of its head for ``(N, D)`` features; computed on the run's device in its
    precision, returned on the CPU as float32."""
    with device.autocast():
        inputs = device.to_current(x)
        out = model.heads[task](inputs) if head_only else model(inputs, task)
    return out.float().cpu()


def statistics_sample(n: int, sample: int | None) -> torch.Tensor:
    """Sorted indices of the ``sample`` training images (of ``n``) that go through the network for
    the router statistics: evenly spaced over the task's (already shuffled) training split, so the
    same config gives the same sample; all ``n`` when ``sample`` is None or not smaller."""
    if sample is None or sample >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, sample).round().long().unique()


@torch.no_grad()
def task_features(model, task: str, n_classes: int, train_x: torch.Tensor, train_y: torch.Tensor,
                  val_x: torch.Tensor, sample: int | None, batch_size: int = EVAL_BATCH) -> TaskFeatures:
    """:class:`TaskFeatures` of task ``task`` from its ``(N, C, H, W)`` training images with local
    labels ``(N,)`` and its validation images (the training sample when there are none): one pass
    of ``sample`` training images (all when None) and of the validation images through the task's
    branch and the reference branch. ``model`` is a :class:`~pearl_cl.core.model.ContinualModel`
    that has learned the task."""
    model.eval()
    is_reference = task == model.reference_task

    def joint(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        feats, logits = _features(model, x, task, batch_size)
        ref = feats if is_reference else _features(model, x, model.reference_task, batch_size)[0]
        return joint_features(feats, ref, is_reference), logits, ref, feats

    idx = statistics_sample(len(train_y), sample)
    counts = torch.bincount(train_y[idx], minlength=n_classes)
    if int(counts.min()) < 2:
        raise ConfigError(f"routing.sample={sample} leaves class {int(counts.argmin())} of task {task} with "
                          f"{int(counts.min())} image(s) for the router statistics; raise routing.sample or set it to null (all)")
    feats, logits, ref_feats, branch = joint(train_x.take(idx) if isinstance(train_x, NormalisedImages) else train_x[idx])
    val_feats, val_logits, _, val_branch = joint(val_x) if len(val_x) else (feats, logits, ref_feats, branch)
    return TaskFeatures(train_y[idx], n_classes, feats, ref_feats, train_x, train_y, val_logits, val_branch, val_feats)


def task_statistics(model, task: str, n_classes: int, train_x: torch.Tensor, train_y: torch.Tensor,
                    val_x: torch.Tensor, routing, batch_size: int = EVAL_BATCH) -> TaskStatistics:
    """Statistics of task ``task`` for ``routing.router`` (every registered router with
    ``routing.fit_all``), with their calibration (:func:`task_features` gives what they are
    computed from; ``routing`` is the run's :class:`~pearl_cl.config.RoutingConfig`). The
    network pass is skipped when no router needs it.

    Raises:
        ConfigError: ``routing.sample`` leaves a class fewer than 2 images.
    """
    routers = [ROUTERS.get(n)() for n in ROUTERS.names()] if routing.fit_all else [ROUTERS.get(routing.router)()]
    stats = TaskStatistics({}, {})
    if all(not r.keeps and not r.per_branch for r in routers):
        return stats
    if all(not r.per_branch and not r.needs_network for r in routers):
        empty = torch.empty(0)
        data = TaskFeatures(torch.empty(0, dtype=torch.long), n_classes, empty, empty, train_x, train_y, empty, empty, empty)
    else:
        data = task_features(model, task, n_classes, train_x, train_y, val_x, routing.sample, batch_size)
    for router in routers:
        if router.keeps:
            stats.routers[router.name] = router.fit(data, routing)
        if router.per_branch:
            features = data.val_joint if router.uses_reference_features else data.val_branch
            stats.calibration[router.name] = calibration_row(router.score(data.val_logits, features, stats.of(router.name)))
    return stats


def reference_features(model, x: torch.Tensor) -> torch.Tensor:
    """``(N, D_ref)`` features of ``x`` ``(N, C, H, W)`` through the reference branch, one pass."""
    return _features(model, x, model.reference_task, len(x))[0]
