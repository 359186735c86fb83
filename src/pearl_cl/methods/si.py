"""SI (Synaptic Intelligence): a quadratic penalty weighted by each weight's contribution to the
drop in loss along its training path.

Source: Zenke, Poole & Ganguli, "Continual Learning Through Synaptic Intelligence" (ICML 2017).
During a task, ω_k += −g_k·Δθ_k at every optimiser step (Δθ the step's change; g the gradient of
the step's whole loss, penalty included, as in van de Ven & Tolias' implementation — Zenke et al.
use the gradient of the task loss alone). At the task's end Ω_k += ω_k / ((θ_k − θ_k^start)² + ξ),
θ* ← θ, ω ← 0; later tasks add c·Σ_k Ω_k (θ_k − θ*_k)² to the loss. Negative ω (a weight that
moved uphill) is clipped to 0 (our choice: a negative importance would reward leaving the
anchor). Hyper-parameters: the ``si.*`` section (:class:`SIConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.errors import ConfigError
from pearl_cl.methods.single_head import AnchoredPenalty
from pearl_cl.registry import METHODS


@dataclass
class SIConfig:
    """SI: ``c`` ≥ 0 the penalty's strength, ``xi`` > 0 the damping ξ. Defaults: van de Ven &
    Tolias' Split-MNIST task-incremental settings (2019), c = 50, ξ = 0.1."""

    LEGACY: ClassVar[dict[str, str]] = {"baselines.si_c": "c", "baselines.si_xi": "xi"}
    c: float = 50.0
    xi: float = 0.1

    def check(self, config: RunConfig) -> None:
        """Raise :class:`ConfigError` naming the first ``si.*`` key out of range."""
        if not (math.isfinite(self.c) and self.c >= 0):
            raise ConfigError(f"si.c must be finite and >= 0, got {self.c!r}")
        if not (math.isfinite(self.xi) and self.xi > 0):
            raise ConfigError(f"si.xi must be finite and > 0, got {self.xi!r}")


@METHODS.register("si")
class SI(AnchoredPenalty):
    """Synaptic Intelligence on the expanding-head network; ``importance`` is Ω."""

    config_section = SIConfig
    state_prefix = "si"
    marker = "D"
    order = 40

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._path: dict[str, torch.Tensor] = {}
        self._start: dict[str, torch.Tensor] = {}
        self._previous: dict[str, torch.Tensor] = {}

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.named_parameters()}

    def strength(self) -> float:
        """c (``si.c``)."""
        return self.config.si.c

    def begin_task(self, task: TaskData) -> None:
        """Start a new path integral ω = 0 at the current weights."""
        self._start = self._weights()
        self._previous = self._weights()
        self._path = {k: torch.zeros_like(v) for k, v in self._start.items()}

    @torch.no_grad()
    def after_step(self) -> None:
        """ω += −g·Δθ for the step just taken."""
        for name, p in self.net.named_parameters():
            if p.grad is not None:
                self._path[name] -= p.grad * (p - self._previous[name])
            self._previous[name].copy_(p)

    def end_task(self, task: TaskData, x: torch.Tensor, targets: torch.Tensor) -> None:
        """Ω += max(ω, 0) / ((θ − θ_start)² + ξ); θ* ← θ."""
        xi = self.config.si.xi
        end = self._weights()
        for name, w in self._path.items():
            omega = w.clamp_min(0) / ((end[name] - self._start[name]) ** 2 + xi)
            self.importance[name] = self.importance.get(name, torch.zeros_like(omega)) + omega
        self.anchor = end
        self._path, self._start, self._previous = {}, {}, {}
