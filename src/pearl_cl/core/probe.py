"""Proximity probes: how far a new task pulls the reference weights (our design; docs/method.md).

Both probes work on a throw-away copy of the reference backbone with a fresh head for the task
and return ΔW_l for every adaptable layer l; nothing they do touches the model being learned.

* ``finetune``: train the copy with all weights free for ``probe_epochs``; ΔW = W_probe − W_ref.
* ``gradient``: one pass over the task's training data taking each batch's gradient at W_ref
  and feeding it, without moving W_ref, to the configured optimiser (``torch.optim`` Adam or SGD
  with momentum, as :func:`~pearl_cl.learning.training.make_optimizer` builds it, weight decay left out)
  acting on a displacement that starts at 0; ΔW is where that displacement ends: the step one
  epoch of training would take if every batch's gradient kept its value at W_ref (our reading;
  the paper's abstract is silent). Following the optimiser matters: a plain −lr·Σ∇W at Adam's
  learning rate 1e-3 moves so little that the residual rule gives rank 0 in every layer of
  every split-mnist task (resnet18 and mlp, measured with ``benchmarks/speed.py`` section 2),
  while Adam's displacement is on the scale of the ``finetune`` probe's.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from pearl_cl import device
from pearl_cl.backbones import adaptable_layers
from pearl_cl.data.batches import iterate_batches
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.errors import TrainingError
from pearl_cl.learning.training import FitSettings, fit, make_optimizer
from pearl_cl.registry import PROBES



def _probe_network(reference: nn.Module, n_classes: int, seed: int) -> tuple[nn.Module, nn.Linear]:
    torch.manual_seed(seed)
    backbone = copy.deepcopy(reference)
    for p in backbone.parameters():
        p.requires_grad_(True)
    return backbone, nn.Linear(backbone.feature_dim, n_classes).to(device.current())


def _weights(backbone: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in adaptable_layers(backbone).items()}


@PROBES.register("finetune")
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


@PROBES.register("gradient")
def gradient_probe(reference: nn.Module, task: TaskData, settings: FitSettings, seed: int) -> dict[str, torch.Tensor]:
    """ΔW per adaptable layer: the optimiser of ``settings`` stepped once per training batch of
    ``task`` with that batch's gradient at the reference weights (module docstring).

    Returns layer name → tensor shaped like that layer's weight; a layer the loss does not reach
    gets zeros (hence rank 0).

    Raises:
        TrainingError: the task has no training images, or a batch's loss is NaN or infinite.
    """
    if len(task.train_y) == 0:
        raise TrainingError(f"{task.name} gradient probe: no training images; check the benchmark's task split")
    backbone, head = _probe_network(reference, len(task.classes), seed)
    layers = adaptable_layers(backbone)
    weights = [m.weight for m in layers.values()]
    moved = [torch.zeros_like(w, requires_grad=True) for w in weights]
    optimizer = make_optimizer(moved, dataclasses.replace(settings, weight_decay=0.0))
    backbone.train()
    generator = torch.Generator().manual_seed(seed)
    for xb, yb in iterate_batches(task.train_x, task.train_y, settings.batch_size, generator):
        loss = nn.functional.cross_entropy(head(backbone(xb)), device.to_current(yb))
        if not torch.isfinite(loss):
            raise TrainingError(f"{task.name} gradient probe: loss became {loss.item()}; check the task's data")
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        for displacement, g in zip(moved, grads):
            displacement.grad = torch.zeros_like(displacement) if g is None else g
        optimizer.step()
    return {name: d.detach() for name, d in zip(layers, moved)}


def run_probe(kind: str, reference: nn.Module, task: TaskData, settings: FitSettings, seed: int) -> dict[str, torch.Tensor]:
    """Run the probe registered as ``kind`` (``pearl.probe``).

    Raises:
        ConfigError: unknown probe.
    """
    return PROBES.get(kind)(reference, task, settings, seed)
