"""The router interface and the routing loop shared by every router (our design).

A *per-branch* router scores every task branch on an image (higher = more likely that task);
each score is standardised with the task's own validation statistics (calibration) and the best
task wins: T forward passes for T tasks. A *one-pass* router chooses the task without running
the branches (from the reference features, or the true label) and then runs only the chosen
branch.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch

from pearl_cl.errors import ConfigError
from pearl_cl.registry import ROUTERS
from pearl_cl.routers.statistics import (TaskFeatures, TaskStatistics, branch_logits, joint_features,
                                         reference_features, _features)


class Router:
    """One way to pick the task of an unlabelled image; subclasses register with
    ``@ROUTERS.register("name")``.

    A router says what it keeps of each task (:meth:`fit`, at the end of the task), how it scores
    an image against a task (:meth:`score`, per branch, then :meth:`calibrated` with the task's
    own validation statistics) or chooses in one pass (:meth:`choose`), and how many bytes it
    keeps per task (:meth:`~pearl_cl.routers.statistics.TaskStatistics.nbytes`).

    Class attributes:
        name: the registered name.
        per_branch: True: :meth:`score` each branch and calibrate; False: :meth:`choose`.
        keeps: True: :meth:`fit` keeps tensors per task; False: the router needs none.
        needs_network: :meth:`fit` reads the features of the network (the
            :class:`~pearl_cl.routers.statistics.TaskFeatures` of a network pass); False: only
            the images.
        uses_reference_features: :meth:`score` reads each branch's features joined with the
            reference branch's (:func:`~pearl_cl.routers.statistics.joint_features`).
        legacy_row: the row of this router's calibration in the ``(R, 2)`` tensor of pearl-cl
            0.1 task files (None: it had none).
    """

    name: ClassVar[str] = ""
    per_branch: ClassVar[bool] = True
    keeps: ClassVar[bool] = False
    needs_network: ClassVar[bool] = True
    uses_reference_features: ClassVar[bool] = False
    legacy_row: ClassVar[int | None] = None

    def fit(self, data: TaskFeatures, routing) -> dict[str, torch.Tensor]:
        """The tensors this router keeps of one task, from its
        :class:`~pearl_cl.routers.statistics.TaskFeatures` (``routing``: the run's
        :class:`~pearl_cl.config.RoutingConfig`). Statistics only: no row may be an image or a
        feature vector of one image."""
        return {}

    def from_legacy(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """This router's tensors read from a pearl-cl 0.1/0.2 task file's ``router.*`` tensors
        (None: those files kept nothing for it)."""
        return None

    def score(self, logits: torch.Tensor, features: torch.Tensor, kept: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw ``(N,)`` scores of one branch (before calibration) from its ``(N, K)`` logits and
        ``(N, D)`` features (joined with the reference features when
        :attr:`uses_reference_features`) and the tensors :meth:`fit` kept for the task.

        Raises:
            NotImplementedError: a one-pass router.
        """
        raise NotImplementedError(f"{self.name} is a one-pass router: use choose()")

    def choose(self, x: torch.Tensor, ref_features: Callable[[], torch.Tensor], stats: list[TaskStatistics],
               routing, true_task: torch.Tensor | None) -> torch.Tensor:
        """``(N,)`` chosen task indices for images ``x`` ``(N, C, H, W)`` without running the
        branches; ``ref_features()`` gives their ``(N, D_ref)`` reference features, ``stats`` the
        T tasks' statistics, ``routing`` the run's :class:`~pearl_cl.config.RoutingConfig`.

        Raises:
            NotImplementedError: a per-branch router.
        """
        raise NotImplementedError(f"{self.name} is a per-branch router: use score()")

    def calibrated(self, raw: torch.Tensor, stats: TaskStatistics) -> torch.Tensor:
        """``(N,)`` raw scores standardised with the task's validation mean and std.

        Raises:
            ConfigError: the task's statistics hold no calibration for this router (the task
                was learned before the router was registered).
        """
        if self.name not in stats.calibration:
            usable = sorted(set(stats.calibration) | set(stats.routers) | {n for n, r in ROUTERS.items()
                                                                         if not r.keeps and not r.per_branch})
            raise ConfigError(f"the saved task statistics have no calibration for router {self.name!r} (the run was "
                              f"learned without it; routing.fit_all=true keeps every router's); choose routing.router "
                              f"from: {', '.join(usable)}")
        mean, std = stats.calibration[self.name]
        return (raw.double() - mean) / std


def get_router(name: str) -> Router:
    """The registered router ``name``.

    Raises:
        ConfigError: unknown name (lists the routers).
    """
    return ROUTERS.get(name)()


def branch_outputs(model, x: torch.Tensor, name: str, lookup: torch.Tensor, stats: TaskStatistics, router: Router,
                   ref_feats: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What branch ``name`` tells ``router`` about ``x`` ``(N, C, H, W)``, in one pass: ``(N,)``
    global classes its head predicts (``lookup`` maps its local classes to global ones) and,
    for a per-branch router, ``(N,)`` its calibrated scores (else None). ``ref_feats``
    (:func:`~pearl_cl.routers.statistics.reference_features` of ``x``) is needed when the router
    :attr:`~Router.uses_reference_features`."""
    is_reference = name == model.reference_task
    if ref_feats is not None and is_reference:
        feats, logits = ref_feats, branch_logits(model, ref_feats, name, head_only=True)
    else:
        feats, logits = _features(model, x, name, len(x))
    preds = lookup[logits.argmax(dim=1)]
    if not router.per_branch:
        return preds, None
    if ref_feats is not None:
        feats = joint_features(feats, ref_feats, is_reference)
    return preds, router.calibrated(router.score(logits, feats, stats.of(router.name)), stats)


@torch.no_grad()
def route(model, x: torch.Tensor, tasks: list[str], classes: list[tuple[int, ...]], stats: list[TaskStatistics],
          router: Router, routing, true_task: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict a global class for each image of ``x`` ``(N, C, H, W)`` without its task label.

    Args:
        model: a :class:`~pearl_cl.core.model.ContinualModel` in eval mode.
        tasks: the branches to choose from, in order; ``classes[t]`` are task t's global classes
            and ``stats[t]`` its :class:`~pearl_cl.routers.statistics.TaskStatistics`.
        router: the router.
        routing: the run's :class:`~pearl_cl.config.RoutingConfig` (shrinkage of the routers that
            pool covariances).
        true_task: ``(N,)`` task indices, for the oracle router only.

    Returns:
        ``(N,)`` predicted global classes and ``(N,)`` chosen task indices (into ``tasks``).
        Per-branch routers run every branch over the whole batch (T forward passes); one-pass
        routers then run each chosen branch once over the images routed to it.

    Raises:
        ValueError: the router needs ``true_task`` and it is None.
    """
    lookup = [torch.tensor(c) for c in classes]
    if router.per_branch:
        ref_feats = reference_features(model, x) if router.uses_reference_features else None
        outputs = [branch_outputs(model, x, name, lookup[t], stats[t], router, ref_feats) for t, name in enumerate(tasks)]
        chosen = torch.stack([scores for _, scores in outputs]).argmax(dim=0)
        return torch.stack([preds for preds, _ in outputs]).gather(0, chosen[None]).squeeze(0), chosen
    chosen = router.choose(x, lambda: reference_features(model, x), stats, routing, true_task)
    pred = torch.empty(len(x), dtype=torch.long)
    for t in chosen.unique().tolist():
        idx = torch.nonzero(chosen == t).squeeze(1)
        pred[idx] = lookup[t][branch_logits(model, x[idx], tasks[t]).argmax(dim=1)]
    return pred, chosen
