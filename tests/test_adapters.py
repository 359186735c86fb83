"""Adapters on PEFT: SVD initialisation, rank-0 layers, merging and per-task parameters."""

from __future__ import annotations

import pytest
import torch

from pearl_cl.core.adapters import adapter_delta, adapter_ranks, add_task_adapter, merged_copy, svd_factors, task_parameters
from pearl_cl.backbones import adaptable_layers, build_backbone
from pearl_cl.core.model import ContinualModel
from pearl_cl.core.rank import factorise


def _model(name: str) -> ContinualModel:
    torch.manual_seed(0)
    model = ContinualModel(build_backbone(name, (1, 28, 28), width=0.25))
    model.add_head("task1", 2)
    return model


def _deltas(model: ContinualModel, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: 0.1 * torch.randn(m.weight.shape, generator=g) for n, m in adaptable_layers(model.backbone).items()}


def _best_rank_r(delta: torch.Tensor, r: int) -> torch.Tensor:
    """[ΔW]_r by truncated SVD, reshaped back like ``delta`` (Eckart–Young)."""
    mat = delta.reshape(delta.shape[0], -1).double()
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    return ((u[:, :r] * s[:r]) @ vh[:r]).reshape(delta.shape).float()


@pytest.mark.slow
@pytest.mark.parametrize("backbone, layer", [("resnet18", "layer2.0.conv1"), ("mlp", "fc2")])
def test_svd_init_is_best_rank_r_approximation_of_probe(backbone, layer):
    model = _model(backbone)
    deltas = _deltas(model)
    w_ref = adaptable_layers(model.backbone)[layer].weight.detach().clone()
    ranks = {name: 3 for name in deltas}
    add_task_adapter(model, "task2", ranks, "svd", {n: factorise(d) for n, d in deltas.items()})
    w_probe = w_ref + deltas[layer]
    got = w_ref + adapter_delta(model, "task2", layer)
    expected = w_ref + _best_rank_r(deltas[layer], 3)
    assert torch.allclose(got, expected, atol=1e-5)
    # and it is the best: its error equals the Eckart–Young bound sqrt(sum of the other sigma^2)
    sigma = torch.linalg.svdvals(deltas[layer].reshape(deltas[layer].shape[0], -1).double())
    err = torch.linalg.norm((w_probe - got).double())
    assert float(err) == pytest.approx(float(sigma[3:].pow(2).sum().sqrt()), rel=1e-4)


def test_svd_factors_shapes():
    b, a = svd_factors(factorise(torch.randn(8, 4, 3, 3)), 2)
    assert b.shape == (8, 2) and a.shape == (2, 36)


def test_conv_adapter_output_matches_merged_weights():
    model = _model("resnet18")
    deltas = _deltas(model)
    add_task_adapter(model, "task2", {n: 2 for n in deltas}, "svd", {n: factorise(d) for n, d in deltas.items()})
    model.add_head("task2", 2)
    with torch.no_grad():  # give task2 a BatchNorm of its own, unlike the reference's
        for name, p in model.backbone.named_parameters():
            if ".modules_to_save.task2." in name:
                p.add_(0.5)
        for name, b in model.backbone.named_buffers():
            if ".modules_to_save.task2." in name and name.endswith("running_var"):
                b.mul_(3.0)
    x = torch.randn(6, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        unmerged = model(x, "task2")
        merged = merged_copy(model, "task2").eval()(x)
        reference = merged_copy(model, "task1").eval()(x)
        assert torch.allclose(unmerged, merged, atol=1e-4)
        assert torch.allclose(reference, model(x, "task1"), atol=0)
    # merging made plain layers and left the model's adapters in place
    assert not any("lora" in n for n, _ in merged_copy(model, "task2").named_modules())
    assert adapter_ranks(model, "task2") == {n: 2 for n in deltas}


def test_zero_init_starts_at_reference_and_rank_zero_layers_are_skipped():
    model = _model("resnet18")
    names = list(adaptable_layers(model.backbone))
    ranks = {n: (2 if i % 2 else 0) for i, n in enumerate(names)}
    add_task_adapter(model, "task2", ranks, "zero")
    model.add_head("task2", 2)
    model.heads["task2"].load_state_dict(model.heads["task1"].state_dict())
    assert adapter_ranks(model, "task2") == {n: r for n, r in ranks.items() if r > 0}
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x, "task2"), model(x, "task1"), atol=1e-6)


def test_all_zero_ranks_still_give_the_task_its_own_batchnorm():
    model = _model("resnet18")
    add_task_adapter(model, "task2", {n: 0 for n in adaptable_layers(model.backbone)}, "zero")
    model.add_head("task2", 2)
    params = task_parameters(model, "task2")
    assert adapter_ranks(model, "task2") == {}
    assert any(".modules_to_save.task2." in n for n in params) and not any(".lora_" in n for n in params)


def test_task_parameters_are_disjoint_between_tasks():
    model = _model("resnet18")
    for task in ("task2", "task3"):
        add_task_adapter(model, task, {n: 1 for n in model.layer_names}, "zero")
        model.add_head(task, 2)
    p2, p3 = task_parameters(model, "task2"), task_parameters(model, "task3")
    ref = task_parameters(model, "task1")
    ids = [set(map(id, p.values())) for p in (ref, p2, p3)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert all(".task3." in n or n.startswith("heads.task3") for n in p3)


def test_duplicate_task_is_rejected():
    model = _model("mlp")
    ranks = {"fc1": 1, "fc2": 1}
    add_task_adapter(model, "task2", ranks, "zero")
    with pytest.raises(ValueError, match="already has an adapter"):
        add_task_adapter(model, "task2", ranks, "zero")


class _SuffixNames(torch.nn.Module):
    """A backbone whose layer names end in one another (``conv1`` and ``block.conv1``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 3)
        self.block = torch.nn.Sequential()
        self.block.add_module("conv1", torch.nn.Conv2d(6, 8, 3))
        self.feature_dim = 8

    def forward(self, x):
        return self.block(torch.relu(self.conv1(x))).mean((2, 3))


def test_each_layer_gets_its_own_rank_when_names_are_suffixes():
    model = ContinualModel(_SuffixNames())
    model.add_head("task1", 2)
    add_task_adapter(model, "task2", {"conv1": 2, "block.conv1": 5}, "zero")
    assert adapter_ranks(model, "task2") == {"conv1": 2, "block.conv1": 5}


def test_failed_adapter_is_removed_so_the_task_can_be_retried():
    model = _model("mlp")
    add_task_adapter(model, "task2", {"fc1": 1, "fc2": 1}, "zero")
    with pytest.raises(ValueError, match="PEFT built ranks"):
        add_task_adapter(model, "task3", {"fc1": 1, "fc2": 1, "fc9": 2}, "zero")
    assert "task3" not in model.peft.peft_config and adapter_ranks(model, "task3") == {}
    add_task_adapter(model, "task3", {"fc1": 2, "fc2": 0}, "zero")
    assert adapter_ranks(model, "task3") == {"fc1": 2}


def test_empty_adapter_on_a_backbone_without_batchnorm():
    """An MLP task whose ranks are all 0 has no LoRA layer and no BatchNorm: the reference branch
    must still run, and the reference copy must be the untouched backbone."""
    model = _model("mlp")
    x = torch.randn(3, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        before = model(x, "task1")
        add_task_adapter(model, "task2", {"fc1": 0, "fc2": 0}, "zero")
        model.add_head("task2", 2)
        assert torch.equal(model(x, "task1"), before)
        assert model(x, "task2").shape == (3, 2)
        assert torch.equal(merged_copy(model, "task1")(x), before)
