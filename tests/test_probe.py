"""Proximity probes: what they return, and that they never touch the model being learned."""

from __future__ import annotations

import torch

from pearl_cl.backbones import build_backbone
from pearl_cl.data.batches import iterate_batches
from pearl_cl.probe import finetune_probe, gradient_probe
from pearl_cl.training import FitSettings


def test_gradient_probe_is_minus_lr_times_summed_gradients(small_tasks):
    task = small_tasks[1]
    torch.manual_seed(0)
    reference = build_backbone("mlp", (1, 28, 28), width=0.1)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    settings = FitSettings(epochs=1, batch_size=64, lr=0.01)
    deltas = gradient_probe(reference, task, settings, seed=5)

    # by hand: the same head (seeded as the probe seeds it), the same batches, summed gradients
    torch.manual_seed(5)
    head = torch.nn.Linear(reference.feature_dim, 2)
    copy = build_backbone("mlp", (1, 28, 28), width=0.1)
    copy.load_state_dict(before)
    for xb, yb in iterate_batches(task.train_x, task.train_y, 64, torch.Generator().manual_seed(5)):
        torch.nn.functional.cross_entropy(head(copy(xb)), yb).backward()
    assert set(deltas) == {"fc1", "fc2"}
    for name in deltas:
        expected = -0.01 * getattr(copy, name).weight.grad
        assert torch.allclose(deltas[name], expected, atol=1e-6)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())


def test_finetune_probe_returns_the_displacement_and_leaves_reference_alone(small_tasks):
    torch.manual_seed(0)
    reference = build_backbone("resnet18", (1, 28, 28), width=0.25)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    deltas = finetune_probe(reference, small_tasks[2], FitSettings(epochs=1, batch_size=32, lr=0.001), seed=1)
    assert set(deltas) == {n for n, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(d.shape == reference.get_submodule(n).weight.shape for n, d in deltas.items())
    assert all(float(d.abs().max()) > 0 for d in deltas.values())
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())
