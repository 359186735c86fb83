"""Proximity probes: what they return, and that they never touch the model being learned."""

from __future__ import annotations

import pytest
import torch

from pearl_cl.backbones import build_backbone
from pearl_cl.data.batches import iterate_batches
from pearl_cl.probe import finetune_probe, gradient_probe
from pearl_cl.training import FitSettings


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gradient_probe_steps_as_the_optimiser_would_at_the_reference(small_tasks, optimizer):
    task = small_tasks[1]
    torch.manual_seed(0)
    reference = build_backbone("mlp", (1, 28, 28), width=0.1)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    settings = FitSettings(epochs=1, batch_size=64, lr=0.01, optimizer=optimizer)
    deltas = gradient_probe(reference, task, settings, seed=5)

    # by hand: the same head (seeded as the probe seeds it), the same batches, one gradient per batch
    torch.manual_seed(5)
    head = torch.nn.Linear(reference.feature_dim, 2)
    copy = build_backbone("mlp", (1, 28, 28), width=0.1)
    copy.load_state_dict(before)
    grads = {"fc1": [], "fc2": []}
    for xb, yb in iterate_batches(task.train_x, task.train_y, 64, torch.Generator().manual_seed(5)):
        copy.zero_grad()
        torch.nn.functional.cross_entropy(head(copy(xb)), yb).backward()
        for name in grads:
            grads[name].append(getattr(copy, name).weight.grad.clone())
    assert set(deltas) == {"fc1", "fc2"}
    for name, per_batch in grads.items():
        g = torch.stack(per_batch)
        if optimizer == "sgd":
            expected = -0.01 * g.sum(0)
        else:  # Adam's step m/sqrt(v) with both moments over the pass, times the number of steps
            expected = -0.01 * len(g) * g.mean(0) / (g.pow(2).mean(0).sqrt() + 1e-8)
        assert torch.allclose(deltas[name], expected, atol=1e-6, rtol=1e-4)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())


def test_adam_gradient_probe_moves_each_weight_at_most_lr_per_step(small_tasks):
    """Adam's bound: |m/sqrt(v)| <= 1, so no weight moves more than lr times the number of steps."""
    reference = build_backbone("mlp", (1, 28, 28), width=0.1)
    task = small_tasks[1]
    deltas = gradient_probe(reference, task, FitSettings(epochs=1, batch_size=64, lr=0.01), seed=5)
    steps = -(-len(task.train_y) // 64)
    assert all(float(d.abs().max()) <= 0.01 * steps * (1 + 1e-6) for d in deltas.values())
    assert all(float(d.abs().max()) > 0.01 for d in deltas.values())


def test_finetune_probe_returns_the_displacement_and_leaves_reference_alone(small_tasks):
    torch.manual_seed(0)
    reference = build_backbone("resnet18", (1, 28, 28), width=0.25)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    deltas = finetune_probe(reference, small_tasks[2], FitSettings(epochs=1, batch_size=32, lr=0.001), seed=1)
    assert set(deltas) == {n for n, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(d.shape == reference.get_submodule(n).weight.shape for n, d in deltas.items())
    assert all(float(d.abs().max()) > 0 for d in deltas.values())
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())
