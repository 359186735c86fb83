"""EWC and online EWC: quadratic penalties that hold each weight near its value after earlier
tasks, weighted by diagonal Fisher information.

Source: Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks" (PNAS 2017),
one penalty (λ/2)·Σ_k F_t,k (θ_k − θ*_t,k)² per earlier task t (``ewc``); and the online form of
Schwarz et al., "Progress & Compress" (ICML 2018), one running Fisher F̃ ← γ·F̃ + F_t anchored at
the last task's weights (``online-ewc``), both as van de Ven & Tolias (2019) use them. F_t is
the mean over the task's training images of the squared per-image gradient of log p(ŷ | x), ŷ
the network's own prediction among the units the task trains (van de Ven & Tolias' default, not
the empirical Fisher). Per-image gradients come from ``torch.func`` (vmap of grad), in eval
mode. Hyper-parameters: the ``ewc.*`` and ``online-ewc.*`` sections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from pearl_cl.data.benchmarks import TaskData
from pearl_cl.config import RunConfig
from pearl_cl.errors import ConfigError
from pearl_cl.methods.single_head import AnchoredPenalty
from pearl_cl.registry import METHODS

FISHER_BATCH = 16  # images per vmap call; on a 2-core CPU (MLP 2x400) 16 took 0.68 s per 1,024 images, 64 took 1.4 s


def fisher_diagonal(net: nn.Module, x: torch.Tensor, units: torch.Tensor) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information of ``net`` at its current weights, per parameter name.

    ``x`` is ``(N, C, H, W)``; ``units`` ``(K,)`` are the head units of the softmax. Each entry has
    its parameter's shape and is the mean over the N images of (∂ log p(ŷ|x) / ∂θ)², ŷ = arg-max
    over ``units``.
    """
    net.eval()
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}

    def nll(p: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        logits = functional_call(net, (p, buffers), (image[None],))[:, units]
        return -torch.log_softmax(logits, dim=1).max()

    per_image = vmap(grad(nll), in_dims=(None, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, len(x), FISHER_BATCH):
        grads = per_image(params, x[start : start + FISHER_BATCH])
        for k, g in grads.items():
            total[k] += (g**2).sum(0)
    return {k: v / max(len(x), 1) for k, v in total.items()}


@dataclass
class EWCConfig:
    """EWC: ``lambda`` ≥ 0 the penalty's strength λ, ``fisher_samples`` the images per task for
    the Fisher (None: all training images). Default: van de Ven & Tolias' Split-MNIST Task-IL
    value (``param_values.py`` of github.com/GMvandeVen/continual-learning, 2019), λ = 1e7; the
    ``classic-split-mnist`` protocol sets their value for each scenario."""

    lambda_: float = 1e7
    fisher_samples: int | None = None

    def check(self, config: RunConfig) -> None:
        """Raise :class:`ConfigError` naming the first key of this section out of range."""
        name = _section_name(config, self)
        if not (math.isfinite(self.lambda_) and self.lambda_ >= 0):
            raise ConfigError(f"{name}.lambda must be finite and >= 0, got {self.lambda_!r}")
        if self.fisher_samples is not None and self.fisher_samples < 1:
            raise ConfigError(f"{name}.fisher_samples must be >= 1 or null (all images), got {self.fisher_samples!r}")


@dataclass
class OnlineEWCConfig(EWCConfig):
    """Online EWC: as :class:`EWCConfig`, and ``gamma`` in [0, 1] the Fisher's decay γ. Defaults:
    van de Ven & Tolias' Split-MNIST Task-IL values (2019), λ = 1e8, γ = 0.8."""

    LEGACY: ClassVar[dict[str, str]] = {"baselines.ewc_lambda": "lambda", "baselines.ewc_gamma": "gamma",
                                        "baselines.fisher_samples": "fisher_samples"}
    RENAMED_FROM: ClassVar[tuple[str, str]] = ("ewc", "gamma")  # pearl-cl <= 0.3: method ewc was online EWC
    lambda_: float = 1e8
    gamma: float = 0.8

    def check(self, config: RunConfig) -> None:
        """Raise :class:`ConfigError` naming the first ``online-ewc.*`` key out of range."""
        super().check(config)
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"online-ewc.gamma must be in [0, 1], got {self.gamma!r}")


def _section_name(config: RunConfig, section: object) -> str:
    """The config section name under which ``section`` sits in ``config``."""
    return next(name for name, value in config.sections.items() if value is section)


@METHODS.register("ewc")
class EWC(AnchoredPenalty):
    """EWC on the single-head network: one quadratic penalty per earlier task t,
    (λ/2)·Σ_k F_t,k (θ_k − θ*_t,k)², kept as their sum: importance Σ_t F_t and anchor the
    Fisher-weighted mean of the θ*_t, whose penalty has the same gradient (it differs by a
    constant)."""

    config_section = EWCConfig
    state_prefix = "ewc"
    marker = "s"
    order = 30

    @property
    def settings(self) -> EWCConfig:
        """This method's config section."""
        return self.config.sections[self.name]

    def strength(self) -> float:
        """λ/2."""
        return 0.5 * self.settings.lambda_

    def task_fisher(self, task: TaskData, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """F_t on ``x`` (the first ``fisher_samples`` images), over the units ``task`` trains."""
        limit = self.settings.fisher_samples
        return fisher_diagonal(self.net, x if limit is None else x[:limit], self.train_units(task))

    def end_task(self, task: TaskData, x: torch.Tensor, targets: torch.Tensor) -> None:
        """Importance ← importance + F_t; anchor ← (importance·anchor + F_t·θ) / (importance + F_t),
        computed as θ + importance·(anchor − θ) / (importance + F_t) (exactly θ after the first
        task, and where the sum is 0)."""
        fisher = self.task_fisher(task, x)
        weights = {k: v.detach().clone() for k, v in self.net.named_parameters()}
        for k, f in fisher.items():
            before = self.importance.get(k, torch.zeros_like(f))
            total = before + f
            shift = before * (self.anchor.get(k, weights[k]) - weights[k]) / total.clamp_min(torch.finfo(f.dtype).tiny)
            self.anchor[k] = weights[k] + shift
            self.importance[k] = total


@METHODS.register("online-ewc")
class OnlineEWC(EWC):
    """Online EWC (Schwarz et al. 2018): one running Fisher F̃ ← γ·F̃ + F_t and the latest
    weights θ* as the anchor."""

    config_section = OnlineEWCConfig
    marker = "X"
    order = 31

    def end_task(self, task: TaskData, x: torch.Tensor, targets: torch.Tensor) -> None:
        """F̃ ← γ·F̃ + F_t on the task's images, θ* ← θ."""
        fisher = self.task_fisher(task, x)
        gamma = self.settings.gamma
        self.importance = {k: gamma * self.importance[k] + f if k in self.importance else f for k, f in fisher.items()}
        self.anchor = {k: v.detach().clone() for k, v in self.net.named_parameters()}
