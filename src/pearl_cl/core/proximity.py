"""Task-level proximity measures: how far a new task is from what the reference weights already
do, as one number per task and a share per adaptable layer (our design; docs/method.md lists
what each was measured to track, ``benchmarks/rank_truth.py`` measures it).

Each measure is a function ``(reference, task, settings, seed) -> Proximity`` registered in
:data:`pearl_cl.registry.PROXIMITIES`; ``reference`` is the frozen reference backbone (W_ref with
its BatchNorm statistics), used in eval mode and never changed. The linear-probe and gradient
measures look at no more than :data:`SAMPLE` training images (a seeded subset).

* ``linear-probe``: fit a linear head (multinomial logistic regression, L-BFGS) on the frozen
  reference features of the task's training images; the proximity is that head's two-fold
  cross-validated cross-entropy divided by log K (K classes), so 0 means the reference features
  already separate the task and about 1 means they carry nothing of it (the "linear probe" of
  representation learning, e.g. Alain & Bengio 2016, used here as a distance).
* ``gradient``: with that fitted head, the gradient of the training loss with respect to every
  adaptable layer's weight at W_ref; the proximity is ‖∇W‖_F / ‖W_ref‖_F over all adaptable
  layers, and each layer's share is its ‖∇W_l‖_F / ‖W_ref,l‖_F. Fitting the head first matters:
  with a fresh random head the gradient measures the head's ignorance, not the task.
* ``displacement``: the mean over layers of ‖ΔW_l‖_F / ‖W_ref,l‖_F after the ``finetune`` probe
  (``pearl.probe_epochs`` epochs from W_ref, all weights free) — the quantity PEARL's default
  rank rule thresholds; its shares are the per-layer ratios.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from pearl_cl import device
from pearl_cl.backbones import adaptable_layers
from pearl_cl.core.probe import finetune_probe
from pearl_cl.core.rank import proximity as layer_proximity
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.learning.training import EVAL_BATCH, FitSettings
from pearl_cl.registry import PROXIMITIES

SAMPLE = 1024  # training images a measure looks at (a seeded subset): bounds its cost on large tasks
HEAD_L2 = 1e-3  # L2 on the linear head's weights (per image, mean loss): keeps L-BFGS finite on separable tasks
HEAD_ITERATIONS = 100  # L-BFGS iterations; a 5-class head on 400 features converges in fewer on MNIST


@dataclass(frozen=True)
class Proximity:
    """One measure's view of a task.

    Attributes:
        task: the task's proximity (dimensionless, ≥ 0; larger = farther from the reference).
        layers: adaptable layer name → the layer's share of the task's need (≥ 0, summing to 1;
            uniform when the measure sees no layer move).
    """

    task: float
    layers: dict[str, float]


def _shares(values: dict[str, float]) -> dict[str, float]:
    total = sum(values.values())
    if total <= 0 or not math.isfinite(total):
        return {name: 1.0 / len(values) for name in values}
    return {name: v / total for name, v in values.items()}


@torch.no_grad()
def reference_features(reference: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` features of ``x`` ``(N, C, H, W)`` through the frozen reference backbone (eval mode)."""
    reference.eval()
    return torch.cat([reference(device.to_current(x[s : s + EVAL_BATCH])) for s in range(0, len(x), EVAL_BATCH)])


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int) -> nn.Linear:
    """A Linear ``(D → n_classes)`` fitted by L-BFGS to minimise the mean cross-entropy of
    ``(N, D)`` features against ``(N,)`` labels plus :data:`HEAD_L2` · ‖W‖² (deterministic for a
    given ``seed``); on the features' device."""
    torch.manual_seed(seed)
    labels = labels.to(features.device)
    head = nn.Linear(features.shape[1], n_classes, device=features.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=HEAD_ITERATIONS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(head(features), labels) + HEAD_L2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def training_sample(task: TaskData, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most :data:`SAMPLE` of the task's training images and labels, a subset drawn with ``seed``."""
    if len(task.train_y) <= SAMPLE:
        return task.train_x, task.train_y
    keep = torch.randperm(len(task.train_y), generator=torch.Generator().manual_seed(seed))[:SAMPLE].sort().values
    return task.train_x[keep], task.train_y[keep]


def _fitted_head(reference: nn.Module, task: TaskData, seed: int) -> nn.Linear:
    x, y = training_sample(task, seed)
    return fit_linear_head(reference_features(reference, x), y, len(task.classes), seed)


def cross_validated_loss(features: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int) -> float:
    """Two-fold cross-validated cross-entropy of a linear head on ``(N, D)`` features: fitted on
    one seeded half, scored on the other, and the other way round; the mean over all N images.
    Every image is scored once by a head that never saw it, so the estimate uses all N images
    (a held-out split of 10% would use a tenth and be that much noisier)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    total = 0.0
    for fit_on, score_on in (halves, halves[::-1]):
        head = fit_linear_head(features[fit_on], labels[fit_on], n_classes, seed)
        with torch.no_grad():
            scored = labels[score_on].to(features.device)
            total += float(nn.functional.cross_entropy(head(features[score_on]), scored, reduction="sum"))
    return total / len(labels)


@PROXIMITIES.register("linear-probe")
def linear_probe(reference: nn.Module, task: TaskData, settings: FitSettings, seed: int) -> Proximity:
    """Two-fold cross-validated cross-entropy of a linear head on frozen reference features
    (:func:`cross_validated_loss`), over log K; the layer shares are uniform (the measure sees
    no layer)."""
    x, y = training_sample(task, seed)
    loss = cross_validated_loss(reference_features(reference, x), y, len(task.classes), seed)
    layers = list(adaptable_layers(reference))
    return Proximity(loss / math.log(max(len(task.classes), 2)), {name: 1.0 / len(layers) for name in layers})


def weight_gradients(reference: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient of the mean cross-entropy of ``head(reference(x))`` against ``y`` with
    respect to every adaptable layer's weight, at W_ref (a copy; eval mode: the reference
    BatchNorm statistics), layer name → tensor shaped like the weight."""
    net = copy.deepcopy(reference).eval()
    layers = adaptable_layers(net)
    net.requires_grad_(False)
    for module in layers.values():
        module.weight.requires_grad_(True)
    for start in range(0, len(x), EVAL_BATCH):
        xb, yb = device.to_current(x[start : start + EVAL_BATCH]), device.to_current(y[start : start + EVAL_BATCH])
        loss = nn.functional.cross_entropy(head(net(xb)), yb, reduction="sum") / len(x)
        loss.backward()
    return {name: (m.weight.grad if m.weight.grad is not None else torch.zeros_like(m.weight)) for name, m in layers.items()}


@PROXIMITIES.register("gradient")
def gradient_norm(reference: nn.Module, task: TaskData, settings: FitSettings, seed: int) -> Proximity:
    """‖∇W‖_F / ‖W_ref‖_F over the adaptable layers after fitting a linear head; shares from each
    layer's own ratio."""
    head = _fitted_head(reference, task, seed)
    head.requires_grad_(False)
    grads = weight_gradients(reference, head, *training_sample(task, seed))
    weights = {name: m.weight.detach() for name, m in adaptable_layers(reference).items()}
    ratio = {name: layer_proximity(grads[name], weights[name]) for name in grads}
    total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))
    norm = math.sqrt(sum(float(w.double().pow(2).sum()) for w in weights.values()))
    return Proximity(total / max(norm, 1e-12), _shares(ratio))


@PROXIMITIES.register("displacement")
def displacement(reference: nn.Module, task: TaskData, settings: FitSettings, seed: int) -> Proximity:
    """Mean ‖ΔW_l‖_F / ‖W_ref,l‖_F after the ``finetune`` probe (``settings``' epochs)."""
    deltas = finetune_probe(reference, task, settings, seed)
    weights = {name: m.weight.detach() for name, m in adaptable_layers(reference).items()}
    ratio = {name: layer_proximity(deltas[name], weights[name]) for name in deltas}
    return Proximity(sum(ratio.values()) / len(ratio), _shares(ratio))
