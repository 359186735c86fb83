"""InfLoRA: a low-rank update per task whose down-projection is designed, not learned, so that it
cannot interfere with earlier tasks, merged into the weights after each task.

Source: Liang & Li, "InfLoRA: Interference-Free Low-Rank Adaptation for Continual Learning"
(CVPR 2024), Section 3, on the single head of the other baselines
(:mod:`pearl_cl.methods.single_head`). For task t and every target layer with weight W
(``d_out × d``): the layer's inputs on task t's training images form H_t (``d × n``); with M the
orthonormal basis (``d × k``) of earlier tasks' input subspace, the rows of the frozen
down-projection A_t (``r × d``) are the top-r left singular vectors of (I − M Mᵀ) H_t, so
A_t M = 0; only B_t (``d_out × r``, zero at the start) and the head train, and W·x + B_t A_t x
leaves every x in span(M) — the inputs of earlier tasks — with the output it had. After the task
B_t A_t is merged into W and M grows by the directions of (I − M Mᵀ) H_t that bring the share of
H_t's energy inside span(M) to ``inflora.threshold`` ε (the gradient-projection-memory update of
Saha et al., ICLR 2021, which the paper's DualGPM follows; we always keep M itself, not its
complement). Linear layers take their inputs as they are, Conv2d layers (``groups`` = 1) their
unfolded patches (``d`` = C·kh·kw); depthwise and grouped convolutions, and the running
statistics of BatchNorm layers, stay frozen after the first task.

Departures, for the protocol every method here shares: the first task trains the whole network
(the reference weights), not an adapter on a pre-trained backbone; the head is the single head
of the run's ``scenario`` (the paper trains each task's classifier on its own classes).
Hyper-parameters: the ``inflora.*`` section (:class:`InfLoRAConfig`). It keeps no images: only
the bases M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.errors import ConfigError
from pearl_cl.learning.training import EVAL_BATCH
from pearl_cl.methods.record import prefixed
from pearl_cl.methods.single_head import SingleHead
from pearl_cl.registry import METHODS
from pearl_cl.routers.statistics import statistics_sample

PATCHES_PER_LAYER = 8192  # unfolded patches kept per convolution and task for H_t (a random subset, seeded)


@dataclass
class InfLoRAConfig:
    """InfLoRA: ``rank`` r ≥ 1 of each task's update (the paper's 10), ``threshold`` ε in (0, 1)
    the share of each task's input energy its subspace keeps (the paper uses 0.95–0.99 with a
    schedule; we keep one value), ``samples`` the training images per task whose layer inputs
    form H_t."""

    rank: int = 10
    threshold: float = 0.97
    samples: int = 1000

    def check(self, config: RunConfig) -> None:
        """Raise :class:`ConfigError` naming the first ``inflora.*`` key out of range."""
        if self.rank < 1:
            raise ConfigError(f"inflora.rank must be >= 1, got {self.rank!r}")
        if not (math.isfinite(self.threshold) and 0 < self.threshold < 1):
            raise ConfigError(f"inflora.threshold must be in (0, 1), got {self.threshold!r}")
        if self.samples < 2:
            raise ConfigError(f"inflora.samples must be >= 2 images, got {self.samples!r}")


def target_layers(module: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``module`` InfLoRA adapts, by name: every ``nn.Linear`` and every
    ``nn.Conv2d`` with ``groups`` = 1."""
    return {name: m for name, m in module.named_modules()
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)}


def layer_rows(layer: nn.Module, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``(n, d)`` the vectors ``layer``'s weight multiplies: a Linear layer's inputs (leading
    dimensions flattened), a Conv2d layer's unfolded input patches (at most
    :data:`PATCHES_PER_LAYER`, drawn with ``generator``)."""
    if isinstance(layer, nn.Linear):
        return inputs.reshape(-1, inputs.shape[-1])
    patches = nn.functional.unfold(inputs, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
    rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    if len(rows) > PATCHES_PER_LAYER:
        rows = rows[torch.randperm(len(rows), generator=generator)[:PATCHES_PER_LAYER]]
    return rows


@torch.no_grad()
def layer_inputs(net: nn.Module, layers: dict[str, nn.Module], x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """``{name: (d, n)}`` H of each layer in ``layers`` on images ``x`` ``(N, C, H, W)``, the
    network in eval mode, in batches of :data:`EVAL_BATCH`."""
    generator = torch.Generator().manual_seed(seed)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = [layer.register_forward_pre_hook(lambda m, args, name=name: rows[name].append(layer_rows(m, args[0], generator)))
               for name, layer in layers.items()]
    net.eval()
    try:
        for start in range(0, len(x), EVAL_BATCH):
            net(x[start : start + EVAL_BATCH])
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts).T.double() for name, parts in rows.items()}


def projected_out(h: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``(d, n)`` (I − M Mᵀ) H for ``h`` ``(d, n)`` and orthonormal ``basis`` M ``(d, k)``."""
    return h - basis @ (basis.T @ h)


def left_singular(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d, d)`` left singular vectors of ``m`` ``(d, n)`` as columns, largest first, and ``(d,)``
    their squared singular values (≥ 0), from the eigendecomposition of m mᵀ.

    Our design: ``torch.linalg.svd`` (LAPACK gesdd) failed to converge on a layer's inputs of a
    split-mnist run (ill-conditioned, many repeated singular values); the symmetric eigensolver
    does not fail there and works on a d × d matrix however many inputs n there are."""
    energy, vectors = torch.linalg.eigh(m @ m.T)
    order = torch.argsort(energy, descending=True)
    return vectors[:, order], energy[order].clamp_min(0)


def down_projection(h: torch.Tensor, basis: torch.Tensor, rank: int) -> torch.Tensor:
    """``(r, d)`` A: the top ``r`` = min(``rank``, d − k) left singular vectors of
    (I − M Mᵀ) H as rows, projected out of span(M) again and re-orthonormalised, so A M = 0
    (``(0, d)`` when M fills the space)."""
    d, k = basis.shape
    r = min(rank, d - k)
    if r <= 0:
        return h.new_zeros((0, d))
    u, _ = left_singular(projected_out(h, basis))
    rows = projected_out(u[:, :r], basis)
    q, _ = torch.linalg.qr(rows)
    return q.T


def grown_basis(h: torch.Tensor, basis: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(d, k')`` M with the fewest new directions of (I − M Mᵀ) H (its left singular vectors,
    largest first) that bring the energy of H inside span(M) to ``threshold`` of ‖H‖²_F
    (Saha et al. 2021); M unchanged when it already holds that share."""
    total = float((h**2).sum())
    residual = projected_out(h, basis)
    if total == 0:
        return basis
    inside = total - float((residual**2).sum())
    needed = threshold * total - inside
    if needed <= 0:
        return basis
    u, energy = left_singular(residual)
    k = int(torch.searchsorted(torch.cumsum(energy, 0), torch.tensor(needed, dtype=energy.dtype, device=energy.device)).item()) + 1
    q, _ = torch.linalg.qr(torch.cat([basis, u[:, : min(k, len(energy))]], dim=1))
    return q


class LowRankUpdate(nn.Module):
    """A parametrization of a weight ``W`` (``(d_out, d)``, or a convolution's ``(d_out, C, kh,
    kw)`` with d = C·kh·kw): ``W + (B A)`` reshaped, ``A`` ``(r, d)`` a frozen buffer and ``B``
    ``(d_out, r)`` a parameter starting at zero."""

    def __init__(self, down: torch.Tensor, out_features: int) -> None:
        super().__init__()
        self.register_buffer("down", down)
        self.up = nn.Parameter(torch.zeros(out_features, down.shape[0], dtype=down.dtype, device=down.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """``W + (B A)`` in ``W``'s shape."""
        return weight + (self.up @ self.down).reshape(weight.shape)


@METHODS.register("inflora")
class InfLoRA(SingleHead):
    """InfLoRA on the single-head network (see the module's docstring)."""

    config_section = InfLoRAConfig
    marker = "*"
    order = 55

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bases: dict[str, torch.Tensor] = {}  # layer name → (d, k) orthonormal M, float64
        self.updates: dict[str, LowRankUpdate] = {}

    def _inputs(self, task: TaskData) -> dict[str, torch.Tensor]:
        """H of every target layer on ``inflora.samples`` of ``task``'s training images."""
        x = task.train_x[statistics_sample(len(task.train_x), self.config.inflora.samples)]
        return layer_inputs(self.net, target_layers(self.net.backbone), x, seed=task.index)

    def begin_task(self, task: TaskData) -> None:
        """After the first task: put a :class:`LowRankUpdate` with a designed A on every target
        layer whose input space is not yet full."""
        if not self.records:
            return
        layers = target_layers(self.net.backbone)
        for name, h in self._inputs(task).items():
            down = down_projection(h, self.bases[name], self.config.inflora.rank)
            if len(down):
                update = LowRankUpdate(down.float(), layers[name].weight.shape[0])
                parametrize.register_parametrization(layers[name], "weight", update)
                self.updates[name] = update

    def active_logits(self, x: torch.Tensor) -> torch.Tensor:
        """As :meth:`SingleHead.active_logits`; after the first task every normalisation layer
        runs in eval mode, so its running statistics, which earlier tasks' outputs depend on,
        stay those of the first task."""
        if self.records:
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return super().active_logits(x)

    def task_parameters(self) -> list[nn.Parameter]:
        """Every B of this task and the head."""
        return [u.up for u in self.updates.values()] + list(self.net.head.parameters())

    def end_task(self, task: TaskData, x: torch.Tensor, targets: torch.Tensor) -> None:
        """Merge each B A into its W, then grow each layer's basis by this task's inputs."""
        layers = target_layers(self.net.backbone)
        for name in self.updates:
            parametrize.remove_parametrizations(layers[name], "weight", leave_parametrized=True)
        self.updates = {}
        for name, h in self._inputs(task).items():
            basis = self.bases.get(name, h.new_zeros((h.shape[0], 0)))
            self.bases[name] = grown_basis(h, basis, self.config.inflora.threshold)

    def state_numbers(self) -> int:
        """The bases M of every layer."""
        return sum(b.numel() for b in self.bases.values())

    def method_tensors(self) -> dict[str, torch.Tensor]:
        """``inflora.basis.<layer>``: each layer's basis M ``(d, k)``."""
        return {f"inflora.basis.{name}": b for name, b in self.bases.items()}

    def restore_state(self, task: TaskData, tensors: dict[str, torch.Tensor]) -> None:
        """The bases saved after ``task``."""
        self.bases = prefixed(tensors, "inflora.basis.")
