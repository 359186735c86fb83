"""Isolation: learning a task changes nothing that belongs to earlier tasks."""

from __future__ import annotations

import pytest
import torch

from pearl_cl.core.adapters import add_task_adapter, task_parameters
from pearl_cl.backbones import build_backbone
from pearl_cl.methods.pearl import Pearl
from pearl_cl.core.model import ContinualModel
from pearl_cl.learning.training import FitSettings, fit

from conftest import small_config

pytestmark = pytest.mark.slow  # trains several tasks or spawns processes; make test-fast leaves it out


def _state(model) -> dict[str, torch.Tensor]:
    """The model's tensors by name; PEFT renames a layer's weight to ``*.base_layer.weight`` when a
    later task first adapts it, so that segment is dropped to compare like with like."""
    return {k.replace(".base_layer", ""): v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("backbone", ["resnet18", "separable-cnn", "efficientnet-lite0", "vit-tiny"])
def test_later_task_leaves_reference_and_earlier_tasks_bitwise_unchanged(tmp_path, small_tasks, backbone):
    # r_min=1: every layer gets an adapter, so every kind of adapted layer (Conv2dSame stem, pointwise, Linear) is checked
    config = small_config(tmp_path, train__epochs=1, train__reference_epochs=1, pearl__probe_epochs=1,
                          backbone__name=backbone, pearl__r_min=1)
    learner = Pearl(config, (1, 28, 28))
    for i in range(2):
        learner.learn(small_tasks[i], seed=i)
    before = _state(learner.model)
    learner.model.eval()
    with torch.no_grad():
        logits_before = {t.name: learner.model(t.test_x[:], t.name) for t in small_tasks[:2]}

    learner.learn(small_tasks[2], seed=2)

    after = _state(learner.model)
    assert any(".task3." in k for k in after) and "heads.task3.weight" in after
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed == [], f"earlier tasks' tensors changed: {changed[:5]}"
    learner.model.eval()
    with torch.no_grad():
        for t in small_tasks[:2]:
            assert torch.equal(learner.model(t.test_x[:], t.name), logits_before[t.name])


def test_parameter_counts_match_the_chosen_ranks(tmp_path, small_tasks):
    config = small_config(tmp_path, train__epochs=1, train__reference_epochs=1)
    learner = Pearl(config, (1, 28, 28))
    learner.learn(small_tasks[0], seed=0)
    record = learner.learn(small_tasks[1], seed=1)
    assert record.parameters["adapter"] > 0 and record.parameters["norm"] > 0 and record.parameters["head"] == learner.model.feature_dim * 2 + 2
    # the adapter's parameter count is what the chosen ranks imply: r·(out + in·kh·kw) per layer
    expected = sum(r.rank * (r.shape[0] + r.shape[1]) for r in record.ranks.values())
    assert record.parameters["adapter"] == expected


def test_layer_first_adapted_by_a_later_task_keeps_earlier_branches(small_tasks):
    """task2 leaves half the layers at rank 0; task3 adapts exactly those, so PEFT re-wraps
    layers that earlier branches use plain. Only task3's own parameters may receive gradients."""
    torch.manual_seed(0)
    model = ContinualModel(build_backbone("resnet18", (1, 28, 28), width=0.25))
    model.add_head("task1", 2)
    names = model.layer_names
    settings = FitSettings(epochs=1, batch_size=32, lr=0.01)
    t1, t2, t3 = small_tasks[:3]
    fit(model, lambda xb: model(xb, "task1"), model.parameters(), t1.train_x, t1.train_y, settings, seed=0)
    model.backbone.requires_grad_(False)
    for task, data, parity in (("task2", t2, 0), ("task3", t3, 1)):
        add_task_adapter(model, task, {n: (2 if i % 2 == parity else 0) for i, n in enumerate(names)}, "zero")
        model.add_head(task, 2)
        if task == "task2":
            fit(model, lambda xb: model(xb, "task2"), task_parameters(model, "task2").values(), data.train_x,
                data.train_y, settings, seed=1)
            before = _state(model)
            model.eval()
            with torch.no_grad():
                logits = {t.name: model(t.test_x[:], t.name) for t in (t1, t2)}
            model.zero_grad(set_to_none=True)
    own = task_parameters(model, "task3")
    fit(model, lambda xb: model(xb, "task3"), own.values(), t3.train_x, t3.train_y, settings, seed=2)
    own_ids = {id(p) for p in own.values()}
    stray = [n for n, p in model.named_parameters() if p.grad is not None and id(p) not in own_ids]
    assert stray == []
    after = _state(model)
    assert [k for k, v in before.items() if not torch.equal(v, after[k])] == []
    model.eval()
    with torch.no_grad():
        for t in (t1, t2):
            assert torch.equal(model(t.test_x[:], t.name), logits[t.name])
