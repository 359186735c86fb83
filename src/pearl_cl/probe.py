"""Proximity probes: how far a new task pulls the reference weights (DESIGN.md §2 step 2).

Both probes work on a throw-away copy of the reference backbone with a fresh head for the task
and return ΔW_l for every adaptable layer l; nothing they do touches the model being learned.

* ``finetune``: train the copy with all weights free for ``probe_epochs``; ΔW = W_probe − W_ref.
* ``gradient``: one pass over the task's training data taking gradients at W_ref without
  stepping; ΔW is the displacement one epoch of the configured optimiser would make if the
  gradients stayed at their values at W_ref (our reading; the paper's abstract is silent). With
  ``n`` batches of mean gradients g_b: SGD gives ΔW = −lr·Σ_b g_b (momentum ignored); Adam gives
  ΔW = −lr·n·mean_b(g_b) / (√mean_b(g_b²) + 1e-8) elementwise, its step m̂/√v̂ with both moments
  at their values over the pass. Following the optimiser matters: with Adam's learning rate
  (1e-3), the SGD displacement is so small that the residual rule gave rank 0 in every layer of
  every split-mnist task (``benchmarks/speed.py``), while Adam's is on the scale of the
  ``finetune`` probe's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pearl_cl.backbones import adaptable_layers
from pearl_cl.data.batches import iterate_batches
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.errors import ConfigError, TrainingError
from pearl_cl.training import FitSettings, fit

PROBES = ("finetune", "gradient")
ADAM_EPS = 1e-8  # torch.optim.Adam's default eps


def _probe_network(reference: nn.Module, n_classes: int, seed: int) -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(seed)
    backbone = copy.deepcopy(reference)
    for p in backbone.parameters():
        p.requires_grad_(True)
    return backbone, nn.Linear(backbone.feature_dim, n_classes)


def _weights(backbone: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in adaptable_layers(backbone).items()}


def finetune_probe(reference: nn.Module, task: TaskData, settings: FitSettings, seed: int) -> dict[str, torch.Tensor]:
    """ΔW per adaptable layer after fine-tuning a copy of ``reference`` on ``task``.

    Returns layer name → tensor shaped like that layer's weight.

    Raises:
        TrainingError: the probe's loss became NaN or infinite.
    """
    backbone, head = _probe_network(reference, len(task.classes), seed)
    before = _weights(backbone)
    params = list(backbone.parameters()) + list(head.parameters())
    net = nn.Sequential(backbone, head)
    fit(net, net, params, task.train_x, task.train_y, settings, seed, desc=f"{task.name} probe")
    after = _weights(backbone)
    return {name: after[name] - before[name] for name in before}


def gradient_probe(reference: nn.Module, task: TaskData, settings: FitSettings, seed: int) -> dict[str, torch.Tensor]:
    """ΔW per adaptable layer from one pass of ``task``'s training batches at the reference
    weights, as the optimiser of ``settings`` would step (module docstring: SGD −lr·Σ∇W, Adam
    −lr·n·mean(∇W)/√mean(∇W²)).

    Returns layer name → tensor shaped like that layer's weight; a layer the loss does not reach
    gets zeros (hence rank 0).

    Raises:
        TrainingError: a batch's loss is NaN or infinite.
    """
    backbone, head = _probe_network(reference, len(task.classes), seed)
    layers = adaptable_layers(backbone)
    weights = [m.weight for m in layers.values()]
    total = [torch.zeros_like(w) for w in weights]
    squares = [torch.zeros_like(w) for w in weights] if settings.optimizer == "adam" else None
    backbone.train()
    generator = torch.Generator().manual_seed(seed)
    n = 0
    for xb, yb in iterate_batches(task.train_x, task.train_y, settings.batch_size, generator):
        loss = nn.functional.cross_entropy(head(backbone(xb)), yb)
        if not torch.isfinite(loss):
            raise TrainingError(f"{task.name} gradient probe: loss became {loss.item()}; check the task's data")
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        for i, g in enumerate(grads):
            if g is not None:
                total[i] += g
                if squares is not None:
                    squares[i] += g * g
        n += 1
    if squares is None:
        deltas = [-settings.lr * t for t in total]
    else:
        deltas = [-settings.lr * n * (t / n) / ((q / n).sqrt() + ADAM_EPS) for t, q in zip(total, squares)]
    return dict(zip(layers, deltas))


def run_probe(kind: str, reference: nn.Module, task: TaskData, settings: FitSettings, seed: int) -> dict[str, torch.Tensor]:
    """Dispatch to the probe named ``kind`` (``pearl.probe``).

    Raises:
        ConfigError: unknown probe.
    """
    if kind == "finetune":
        return finetune_probe(reference, task, settings, seed)
    if kind == "gradient":
        return gradient_probe(reference, task, settings, seed)
    raise ConfigError(f"unknown probe {kind!r} (pearl.probe); choose one of: {', '.join(PROBES)}")
