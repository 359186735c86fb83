"""Training per scenario (van de Ven & Tolias 2019), the optimiser across tasks, forward transfer
and ``compare --scenarios``, on real MNIST subsets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pearl_cl.commands.compare import compare
from pearl_cl.commands.comparison import parse_methods
from pearl_cl.commands.report import scenario_rows
from pearl_cl.config import load_config, updated
from pearl_cl.data.benchmarks import Benchmark, scenario_view
from pearl_cl.engine.progress import Progress
from pearl_cl.errors import ConfigError
from pearl_cl.learning import metrics
from pearl_cl.methods.finetune import Finetune
from pearl_cl.registry import BENCHMARKS


def _config(**values):
    base = dict(backbone__name="mlp", backbone__width=0.25, train__batch_size=32, train__iterations=3)
    base.update(values)
    return load_config(**base)


def _benchmark(tasks, name="split-mnist") -> Benchmark:
    return Benchmark(BENCHMARKS[name], tuple(tasks), (1, 28, 28), "test")


def _head_gradients(scenario: str, small_tasks) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of task 2's training loss with respect to the logits, and to the head's
    weights, after task 1 was learned, in ``scenario``."""
    learner = Finetune(_config(scenario=scenario), (1, 28, 28), 10)
    learner.learn(small_tasks[0], seed=0)
    learner._activate(small_tasks[1])
    x, labels = learner.training_data(small_tasks[1])
    learner.net.zero_grad(set_to_none=True)
    logits = learner.active_logits(x[:64])
    logits.retain_grad()
    learner.criterion(logits, learner.unit_targets(labels[:64])).backward()
    return logits.grad, learner.net.head.weight.grad


def test_task_il_training_never_updates_another_tasks_output_units(small_tasks):
    logits, weights = _head_gradients("task-il", small_tasks)
    assert torch.count_nonzero(logits[:, :2]) == 0 and torch.count_nonzero(weights[:2]) == 0  # task 1's classes 0, 1
    assert torch.count_nonzero(logits[:, 2:]) > 0 and torch.count_nonzero(weights[2:4]) > 0
    logits, weights = _head_gradients("class-il", small_tasks)
    assert torch.count_nonzero(logits[:, :2]) > 0 and torch.count_nonzero(weights[:2]) > 0  # a softmax over every class seen


def test_domain_il_tasks_share_the_same_output_units(small_tasks):
    bench = scenario_view(_benchmark(small_tasks[:3]), "domain-il")
    assert bench.spec.scenario == "domain-il" and {t.classes for t in bench.tasks} == {(0, 1)}
    assert torch.equal(bench.tasks[2].test_labels, small_tasks[2].test_y)  # odd or even: the local label
    learner = Finetune(_config(scenario="domain-il"), (1, 28, 28), bench.n_classes)
    for task in bench.tasks[:2]:
        learner.learn(task, seed=task.index)
    assert learner.active == [0, 1] and not learner.identifies_tasks
    assert scenario_view(_benchmark(small_tasks[:3]), "task-il") is not None


def test_a_scenario_the_benchmark_cannot_be_trained_in_is_refused(small_tasks):
    with pytest.raises(ConfigError, match="scenario=class-il needs tasks with classes of their own"):
        scenario_view(_benchmark(small_tasks[:2], "permuted-mnist"), "class-il")
    with pytest.raises(ConfigError, match="unknown scenario 'task'"):
        from pearl_cl.config import validate

        validate(load_config(scenario="task"))


def _adam_steps(learner) -> set[int]:
    return {int(state["step"]) for state in learner.optimizer.state.values()}


def test_the_optimizer_state_is_carried_across_tasks_unless_reset(small_tasks):
    carried = Finetune(_config(), (1, 28, 28), 10)
    reset = Finetune(_config(train__reset_optimizer=True), (1, 28, 28), 10)
    for learner in (carried, reset):
        for task in small_tasks[:2]:
            learner.learn(task, seed=task.index)
    assert _adam_steps(carried) == {6} and _adam_steps(reset) == {3}
    assert not any(k.startswith("optimizer.") for k in reset.task_tensors("task2"))
    restored = Finetune(_config(), (1, 28, 28), 10)
    restored.restore(small_tasks[1], carried.task_tensors("task2"), carried.records[1])
    for a, b in zip(carried.optimizer.state.values(), restored.optimizer.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_forward_transfer_on_a_hand_computed_matrix():
    # R[j-1, j] for j = 1..3 is 60, 55, 70; the network at initialisation scores 50, 40, 50 on them
    assert metrics.forward_transfer(np.array([99.0, 60.0, 55.0, 70.0]), np.array([48.0, 50.0, 40.0, 50.0])) == pytest.approx((10 + 15 + 20) / 3)
    assert metrics.forward_transfer(np.array([80.0]), np.array([50.0])) == 0.0
    progress = Progress.start("class-il", [100, 200, 50])
    progress.seconds, progress.records = [1.0, 1.0, 1.0], [None, None, None]
    progress.ahead[:] = [-1, 120, 30]
    progress.initial[:] = [50, 100, 25]
    assert progress.forward_transfer() == pytest.approx(((60 - 50) + (60 - 50)) / 2)
    progress.ahead[2] = -1
    assert math.isnan(progress.forward_transfer())


def test_a_progress_file_written_before_domain_il_was_counted_still_loads():
    fresh = Progress.start("class-il", [10, 10]).to_json()
    assert set(fresh["correct"]) == {"task-il", "domain-il", "class-il"}
    old = {k: v for k, v in fresh.items() if k not in ("checksum", "ahead", "initial")}
    del old["correct"]["domain-il"]
    from pearl_cl.engine.progress import _checksum

    loaded = Progress.from_json({**old, "checksum": _checksum(old)})
    assert set(loaded.correct) == {"task-il", "class-il"} and (loaded.ahead == -1).all()


def test_compare_trains_single_head_methods_once_per_scenario(tmp_path):
    base = _config(data__train_per_task=200, data__test_per_task=60, benchmark="split-mnist")
    scenarios = {name: updated(base, {"scenario": name}) for name in ("task-il", "domain-il")}
    result = compare(base, parse_methods("finetune,separate"), [0], tmp_path / "cmp", scenarios=scenarios)
    trained = [(r["method"], r["training_scenario"]) for r in result.runs]
    assert trained == [("finetune", "task-il"), ("finetune", "domain-il"), ("separate", "class-il")]
    header, rows = scenario_rows(result)
    assert header[1:4] == ["task-il", "domain-il", "class-il"]
    finetune, separate = rows
    assert finetune[3] == "-" and separate[0] == "separate †" and "-" not in separate[1:4]
    assert finetune[1] == f"{result.runs[0]['task_il_accuracy_pct']:.2f}"
    assert finetune[2] == f"{result.runs[1]['domain_il_accuracy_pct']:.2f}"
    assert (tmp_path / "cmp" / "runs" / "finetune-task-il-seed0" / "metrics.json").is_file()
