"""Proximity probes: what they return, and that they never touch the model being learned."""

from __future__ import annotations

import pytest
import torch

from pearl_cl.backbones import build_backbone
from pearl_cl.data.batches import iterate_batches
from pearl_cl.core.probe import finetune_probe, gradient_probe
from pearl_cl.learning.training import FitSettings


def _batch_gradients(reference, task, seed: int) -> dict[str, torch.Tensor]:
    """Each batch's gradient at the reference weights, (n_batches, *weight shape) per layer, by hand:
    the same head (seeded as the probe seeds it) and the same batches as the probe."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(reference.feature_dim, 2)
    net = build_backbone("mlp", (1, 28, 28), width=0.1)
    net.load_state_dict(reference.state_dict())
    grads = {"fc1": [], "fc2": []}
    for xb, yb in iterate_batches(task.train_x, task.train_y, 64, torch.Generator().manual_seed(seed)):
        net.zero_grad()
        torch.nn.functional.cross_entropy(head(net(xb)), yb).backward()
        for name in grads:
            grads[name].append(getattr(net, name).weight.grad.clone())
    return {name: torch.stack(g) for name, g in grads.items()}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_gradient_probe_is_the_momentum_weighted_sum_of_gradients_at_the_reference(small_tasks, momentum):
    task = small_tasks[1]
    torch.manual_seed(0)
    reference = build_backbone("mlp", (1, 28, 28), width=0.1)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    deltas = gradient_probe(reference, task, FitSettings(1, 64, lr=0.01, optimizer="sgd", momentum=momentum), seed=5)
    assert set(deltas) == {"fc1", "fc2"}
    for name, g in _batch_gradients(reference, task, 5).items():
        n = len(g)  # SGD's buffer sums to: batch b's gradient counts (1 - m^(n-b+1)) / (1 - m) times
        weight = torch.tensor([(1 - momentum ** (n - b)) / (1 - momentum) for b in range(n)])
        expected = -0.01 * (weight[:, None, None] * g).sum(0)
        assert torch.allclose(deltas[name], expected, atol=1e-7, rtol=1e-4)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())


def test_adam_gradient_probe_is_adam_driven_by_the_gradients_at_the_reference(small_tasks):
    task = small_tasks[1]
    torch.manual_seed(0)
    reference = build_backbone("mlp", (1, 28, 28), width=0.1)
    deltas = gradient_probe(reference, task, FitSettings(1, 64, lr=0.01), seed=5)
    for name, g in _batch_gradients(reference, task, 5).items():
        moved, m, v = torch.zeros_like(g[0]), torch.zeros_like(g[0]), torch.zeros_like(g[0])
        for t, gb in enumerate(g, start=1):  # Adam (Kingma & Ba, Algorithm 1), betas 0.9, 0.999, eps 1e-8
            m, v = 0.9 * m + 0.1 * gb, 0.999 * v + 0.001 * gb * gb
            moved -= 0.01 * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        assert torch.allclose(deltas[name], moved, atol=1e-6, rtol=1e-4)
        assert float(deltas[name].abs().max()) > 0.01  # many times one step: not the tiny plain-SGD step


def test_finetune_probe_returns_the_displacement_and_leaves_reference_alone(small_tasks):
    torch.manual_seed(0)
    reference = build_backbone("resnet18", (1, 28, 28), width=0.25)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    deltas = finetune_probe(reference, small_tasks[2], FitSettings(epochs=1, batch_size=32, lr=0.001), seed=1)
    assert set(deltas) == {n for n, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(d.shape == reference.get_submodule(n).weight.shape for n, d in deltas.items())
    assert all(float(d.abs().max()) > 0 for d in deltas.values())
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())
