"""InfLoRA's defining property: the update learned for a task leaves the outputs of every adapted
layer on earlier tasks' input subspace unchanged (Liang & Li, CVPR 2024), on Linear and Conv2d
layers, on real MNIST subsets; and its subspace algebra on constructed matrices."""

from __future__ import annotations

import pytest
import torch

from pearl_cl.config import load_config
from pearl_cl.methods.inflora import InfLoRA, down_projection, grown_basis, left_singular, target_layers


def _orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_left_singular_agrees_with_the_svd_and_takes_repeated_singular_values():
    m = torch.randn(12, 200, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    u, energy = left_singular(m)
    u_svd, s, _ = torch.linalg.svd(m, full_matrices=False)
    torch.testing.assert_close(energy, s**2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close((u * u_svd).sum(0).abs(), torch.ones(12, dtype=torch.float64), rtol=0, atol=1e-8)
    repeated = torch.cat([torch.eye(12, dtype=torch.float64)] * 50 + [torch.zeros(12, 300, dtype=torch.float64)], dim=1)
    u, energy = left_singular(repeated)  # one singular value, 12 times over
    torch.testing.assert_close(energy, torch.full((12,), 50.0, dtype=torch.float64))
    torch.testing.assert_close(u @ u.T, torch.eye(12, dtype=torch.float64))


def test_the_down_projection_is_orthonormal_and_orthogonal_to_earlier_tasks():
    basis = _orthonormal(20, 5, 0)
    h = torch.randn(20, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    down = down_projection(h, basis, rank=4)
    assert down.shape == (4, 20)
    torch.testing.assert_close(down @ basis, torch.zeros(4, 5, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(down @ down.T, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    assert down_projection(h, _orthonormal(20, 18, 2), rank=4).shape == (2, 20)  # only d − k directions are left
    assert down_projection(h, _orthonormal(20, 20, 3), rank=4).shape == (0, 20)


def test_the_basis_grows_to_the_threshold_share_of_a_tasks_input_energy():
    inside = _orthonormal(30, 3, 4)
    h = inside @ torch.randn(3, 40, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    basis = grown_basis(h, torch.zeros(30, 0, dtype=torch.float64), threshold=0.999)
    assert 1 <= basis.shape[1] <= 3
    full = grown_basis(h, torch.zeros(30, 0, dtype=torch.float64), threshold=1 - 1e-12)
    assert full.shape[1] == 3
    torch.testing.assert_close(full @ (full.T @ h), h, atol=1e-10, rtol=0)
    assert grown_basis(h, full, threshold=0.99).shape[1] == 3  # nothing left to add


@pytest.mark.parametrize("backbone", ["mlp", "resnet18"])
def test_a_later_task_leaves_earlier_tasks_input_subspace_unchanged(backbone, small_tasks):
    config = load_config(backbone__name=backbone, backbone__width=0.25, train__batch_size=32, train__iterations=5,
                         inflora__samples=120)
    learner = InfLoRA(config, (1, 28, 28), 10)
    learner.learn(small_tasks[0], seed=0)
    layers = target_layers(learner.net.backbone)
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    bases = {name: basis.clone() for name, basis in learner.bases.items()}
    learner.learn(small_tasks[1], seed=1)
    changed = 0
    for name, layer in layers.items():
        delta = (layer.weight.detach() - before[name]).reshape(len(before[name]), -1).double()
        assert float((delta @ bases[name]).norm()) <= 1e-5 * float(delta.norm()) + 1e-9, name
        changed += float(delta.norm()) > 0
    assert changed >= 2 and not learner.updates  # updates merged; several layers learned
    assert set(learner.bases) == set(layers) and all(learner.bases[n].shape[1] >= bases[n].shape[1] for n in layers)
    if backbone == "resnet18":
        assert any(isinstance(layer, torch.nn.Conv2d) and float((layer.weight.detach() - before[name]).norm()) > 0
                   for name, layer in layers.items())
