"""LwF (Learning without Forgetting): distil the previous network's answers on the new task's
images into the units of the earlier classes.

Source: Li & Hoiem, "Learning without Forgetting" (ECCV 2016; TPAMI 2018), on the single
expanding head of van de Ven & Tolias (2019): after each task a frozen copy of the network is
kept; while learning task t the loss is the cross-entropy on the new task plus
α·T²·KL(softmax(z_old/T) ‖ softmax(z/T)) over the units active before task t, z_old from the
frozen copy (eval mode) and z from the network being trained — Li & Hoiem's weighting (λ_o = α),
not van de Ven & Tolias' 1/t and 1 − 1/t.
Hyper-parameters: the ``lwf.*`` section (:class:`LwFConfig`).
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


@dataclass
class LwFConfig:
    """LwF: ``temperature`` T > 0 of the distillation softmax, ``alpha`` ≥ 0 its weight (Li &
    Hoiem's T = 2, λ_o = 1)."""

    LEGACY: ClassVar[dict[str, str]] = {"baselines.lwf_temperature": "temperature", "baselines.lwf_alpha": "alpha"}
    temperature: float = 2.0
    alpha: float = 1.0

    def check(self, config: RunConfig) -> None:
        """Raise :class:`ConfigError` naming the first ``lwf.*`` key out of range."""
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"lwf.temperature must be finite and > 0, got {self.temperature!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"lwf.alpha must be finite and >= 0, got {self.alpha!r}")


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
        """``(N, C, H, W)`` → ``(N, K_old)`` soft targets of the frozen previous network at
        temperature T over the units active before the current task."""
        logits = self.previous(x)[:, self.previous_units]
        return torch.softmax(logits / self.config.lwf.temperature, dim=1)

    def extra_loss(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """α·T²·KL(targets ‖ current) over the earlier units (the first ``K_old`` active units); 0
        on the first task."""
        if self.previous is None:
            return logits.new_zeros(())
        t = self.config.lwf.temperature
        current = torch.log_softmax(logits[:, : len(self.previous_units)] / t, dim=1)
        kl = nn.functional.kl_div(current, self.targets(xb), reduction="batchmean")
        return self.config.lwf.alpha * t * t * kl

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
