"""LwF (Learning without Forgetting): distil the previous network's answers on the new task's
images into the units of the earlier classes.

Source: Li & Hoiem, "Learning without Forgetting" (ECCV 2016; TPAMI 2018), on the single head of
van de Ven & Tolias (2019): after each task a frozen copy of the network is kept; while learning
task t the loss adds T²·KL(softmax(z_old/T) ‖ softmax(z/T)) on the new task's images, z_old from
the frozen copy (eval mode) and z from the network being trained, over the units active before
task t — for ``scenario=task-il`` over each earlier task's units separately, averaged over those
tasks (van de Ven & Tolias' Task-IL form: one softmax per task's head). ``lwf.variant``:
``li-hoiem`` weighs cross-entropy 1 and distillation α (Li & Hoiem's λ_o = α); ``van-de-ven``
follows van de Ven & Tolias' code (2019), which the ``classic-split-mnist`` protocol sets: the
weights are 1/t and 1 − 1/t, and outside Task-IL the distillation softmax covers every active
unit, the new classes' units with target probability 0 (so it also pulls the new classes'
logits down on the new images). ``lwf.reduction``: ``sum`` adds the KL's terms over the units of
each distillation softmax (the KL divergence itself, Hinton et al. 2015); ``mean`` averages them
over those units as well as over the images, which divides the term by the number of units K (the
form of the reference code's ``utils.loss_fn_kd`` at commit 86802a8 of
github.com/GMvandeVen/continual-learning; its later versions sum, and
``classic-split-mnist`` sets ``mean`` on the measurements in README). Hyper-parameters: the
``lwf.*`` section (:class:`LwFConfig`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.errors import ConfigError
from pearl_cl.methods.single_head import SingleHead
from pearl_cl.registry import METHODS


VARIANTS = ("li-hoiem", "van-de-ven")
REDUCTIONS = ("sum", "mean")


@dataclass
class LwFConfig:
    """LwF: ``temperature`` T > 0 of the distillation softmax, ``alpha`` ≥ 0 its weight under
    ``variant=li-hoiem`` (Li & Hoiem's T = 2, λ_o = 1); ``variant`` one of :data:`VARIANTS`;
    ``reduction`` over a softmax's units, one of :data:`REDUCTIONS`."""

    LEGACY: ClassVar[dict[str, str]] = {"baselines.lwf_temperature": "temperature", "baselines.lwf_alpha": "alpha"}
    temperature: float = 2.0
    alpha: float = 1.0
    variant: str = "li-hoiem"
    reduction: str = "sum"

    def check(self, config: RunConfig) -> None:
        """Raise :class:`ConfigError` naming the first ``lwf.*`` key out of range."""
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"lwf.temperature must be finite and > 0, got {self.temperature!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"lwf.alpha must be finite and >= 0, got {self.alpha!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown lwf.variant {self.variant!r}; choose one of: {', '.join(VARIANTS)}")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"unknown lwf.reduction {self.reduction!r}; choose one of: {', '.join(REDUCTIONS)}")


def _kl(target: torch.Tensor, logits: torch.Tensor, reduction: str) -> torch.Tensor:
    """KL(target ‖ softmax(logits)) averaged over the batch; ``target`` ``(B, K)`` probabilities,
    zeros allowed; ``reduction`` ``"sum"`` keeps it, ``"mean"`` divides it by K (the terms
    averaged over the units too)."""
    terms = torch.special.xlogy(target, target) - target * torch.log_softmax(logits, dim=1)
    return terms.sum(1).mean() / (target.shape[1] if reduction == "mean" else 1)


@METHODS.register("lwf")
class LwF(SingleHead):
    """Learning without Forgetting on the expanding-head network."""

    config_section = LwFConfig
    marker = "P"
    order = 50

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.previous: nn.Module | None = None
        self.previous_units = torch.zeros(0, dtype=torch.long)

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, K_old)`` logits of the frozen previous network over the units
        active before the current task."""
        return self.previous(x)[:, self.previous_units]

    def _weights(self) -> tuple[float, float]:
        """(cross-entropy weight, distillation weight) for the current task t (t ≥ 2)."""
        if self.config.lwf.variant == "van-de-ven":
            t = len(self.task_classes)
            return 1.0 / t, 1.0 - 1.0 / t
        return 1.0, self.config.lwf.alpha

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The single head's cross-entropy, times its weight (:attr:`LwFConfig.variant`)."""
        weight = self._weights()[0] if self.previous is not None else 1.0
        return weight * super().criterion(logits, targets, reduction)

    def extra_loss(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The distillation term, weighted: T²·KL(targets ‖ current) over the earlier units (the
        first ``K_old`` active units; per earlier task, averaged, for ``task-il``; for
        ``van-de-ven`` outside Task-IL over every active unit, the new ones with target 0), divided
        by the softmax's number of units under ``reduction=mean``; 0 on the first task."""
        if self.previous is None:
            return logits.new_zeros(())
        t, reduction = self.config.lwf.temperature, self.config.lwf.reduction
        old = torch.softmax(self.targets(xb) / t, dim=1)
        if self.per_task:
            groups = self._groups()
            kl = sum(_kl(old[:, g] / old[:, g].sum(1, keepdim=True), logits[:, g] / t, reduction) for g in groups) / len(groups)
        elif self.config.lwf.variant == "van-de-ven":
            kl = _kl(nn.functional.pad(old, (0, logits.shape[1] - old.shape[1])), logits / t, reduction)
        else:
            kl = _kl(old, logits[:, : old.shape[1]] / t, reduction)
        return self._weights()[1] * t * t * kl

    def _groups(self) -> list[torch.Tensor]:
        """Positions among the earlier units of each earlier task's units."""
        owner = self._owner()[self.previous_units]
        return [torch.nonzero(owner == k).squeeze(1) for k in owner.unique().tolist()]

    def _freeze(self) -> None:
        """Keep a frozen copy of the network and the units active now."""
        self.previous = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.previous_units = self._units()

    def end_task(self, task: TaskData, x: torch.Tensor, targets: torch.Tensor) -> None:
        """Freeze a copy of the network as it is after ``task``."""
        self._freeze()

    def restore_state(self, task: TaskData, tensors: dict[str, torch.Tensor]) -> None:
        """The frozen copy is the network restored from ``task``'s file."""
        self._freeze()

    def state_numbers(self) -> int:
        """The frozen previous network's parameters."""
        return 0 if self.previous is None else sum(p.numel() for p in self.previous.parameters())
