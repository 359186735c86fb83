"""Isolation (DESIGN.md §2 step 5): learning a task changes nothing that belongs to earlier tasks."""

from __future__ import annotations

import torch

from pearl_cl.methods import Pearl

from conftest import small_config


def _state(model) -> dict[str, torch.Tensor]:
    """The model's tensors by name; PEFT renames a layer's weight to ``*.base_layer.weight`` when a
    later task first adapts it, so that segment is dropped to compare like with like."""
    return {k.replace(".base_layer", ""): v.clone() for k, v in model.state_dict().items()}


def test_later_task_leaves_reference_and_earlier_tasks_bitwise_unchanged(tmp_path, small_tasks):
    config = small_config(tmp_path, train__epochs=1, train__reference_epochs=1, pearl__probe_epochs=1)
    learner = Pearl(config, (1, 28, 28))
    for i in range(2):
        learner.learn(small_tasks[i], seed=i)
    before = _state(learner.model)
    pristine = {k: v.clone() for k, v in learner.reference.state_dict().items()}
    learner.model.eval()
    with torch.no_grad():
        logits_before = {t.name: learner.model(t.test_x, t.name) for t in small_tasks[:2]}

    learner.learn(small_tasks[2], seed=2)

    after = _state(learner.model)
    assert any(".task3." in k for k in after) and "heads.task3.weight" in after
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed == [], f"earlier tasks' tensors changed: {changed[:5]}"
    assert all(torch.equal(v, learner.reference.state_dict()[k]) for k, v in pristine.items())
    learner.model.eval()
    with torch.no_grad():
        for t in small_tasks[:2]:
            assert torch.equal(learner.model(t.test_x, t.name), logits_before[t.name])


def test_new_task_trains_only_its_own_parameters(tmp_path, small_tasks):
    config = small_config(tmp_path, train__epochs=1, train__reference_epochs=1)
    learner = Pearl(config, (1, 28, 28))
    learner.learn(small_tasks[0], seed=0)
    record = learner.learn(small_tasks[1], seed=1)
    assert record.parameters["adapter"] > 0 and record.parameters["norm"] > 0 and record.parameters["head"] == learner.model.feature_dim * 2 + 2
    # the adapter's parameter count is what the chosen ranks imply: r·(out + in·kh·kw) per layer
    expected = sum(r.rank * (r.shape[0] + r.shape[1]) for r in record.ranks.values())
    assert record.parameters["adapter"] == expected
