"""The baselines on real MNIST subsets: each learns, Joint bounds them, and their regularisers
behave as their papers define them."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import small_config
from pearl_cl.config import load_config
from pearl_cl.methods.ewc import EWC, OnlineEWC
from pearl_cl.methods.lwf import LwF
from pearl_cl.methods.si import SI
from pearl_cl.registry import METHODS
from pearl_cl.methods.ewc import fisher_diagonal
from pearl_cl.engine.runner import run


def _config(**values):
    base = dict(backbone__name="mlp", backbone__width=0.25, train__batch_size=32, train__epochs=2,
                train__reference_epochs=2, pearl__r_max=4, pearl__epsilon=0.05)
    base.update(values)
    return load_config(**base)


def test_lwf_van_de_ven_weighting_and_per_task_distillation(small_tasks):
    """``van-de-ven``: cross-entropy 1/t, distillation 1 − 1/t; ``task-il``: one softmax per earlier task."""
    learner = _learned(LwF, small_tasks[0], lwf__variant="van-de-ven", scenario="task-il")
    learner.learn(small_tasks[1], seed=1)
    learner._activate(small_tasks[2])
    assert learner._weights() == pytest.approx((1 / 3, 2 / 3))
    assert [g.tolist() for g in learner._groups()] == [[0, 1], [2, 3]]
    x = small_tasks[2].train_x[:32]
    logits = learner.active_logits(x)
    old, t = learner.targets(x), learner.config.lwf.temperature
    per_task = [torch.nn.functional.kl_div(torch.log_softmax(logits[:, g] / t, 1), torch.softmax(old[:, g] / t, 1),
                                           reduction="batchmean") for g in ([0, 1], [2, 3])]
    torch.testing.assert_close(learner.extra_loss(x, logits), (2 / 3) * t * t * (per_task[0] + per_task[1]) / 2)


def test_lwf_van_de_ven_distils_over_every_active_unit_outside_task_il(small_tasks):
    """Class-IL: the new classes' units join the distillation softmax with target probability 0."""
    learner = _learned(LwF, small_tasks[0], lwf__variant="van-de-ven")
    learner._activate(small_tasks[1])
    x = small_tasks[1].train_x[:32]
    logits, t = learner.active_logits(x), learner.config.lwf.temperature
    target = torch.cat([torch.softmax(learner.targets(x) / t, 1), torch.zeros(32, 2)], dim=1)
    expected = -(target * torch.log_softmax(logits / t, 1)).sum(1).mean() + (target[:, :2] * target[:, :2].log()).sum(1).mean()
    torch.testing.assert_close(learner.extra_loss(x, logits), 0.5 * t * t * expected)
    plain = _learned(LwF, small_tasks[0])
    plain._activate(small_tasks[1])
    assert plain._weights() == (1.0, plain.config.lwf.alpha)


@pytest.mark.parametrize("variant, scenario, units", [("van-de-ven", "class-il", 4), ("van-de-ven", "task-il", 2),
                                                      ("li-hoiem", "class-il", 2)])
def test_lwf_mean_reduction_divides_the_distillation_by_its_softmax_units(small_tasks, variant, scenario, units):
    """``lwf.reduction=mean`` averages over a distillation softmax's units: the ``sum`` term over K
    (every active unit, each task's two units, or the two earlier units)."""
    learner = _learned(LwF, small_tasks[0], lwf__variant=variant, scenario=scenario)
    learner._activate(small_tasks[1])
    x = small_tasks[1].train_x[:32]
    _nudge(learner.net, 0.1)
    logits = learner.active_logits(x)
    summed = learner.extra_loss(x, logits)
    learner.config.lwf.reduction = "mean"
    assert summed.item() > 0
    torch.testing.assert_close(learner.extra_loss(x, logits), summed / units)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_each_method_learns_two_tasks_and_evaluates_both(name, small_tasks):
    learner = METHODS[name](_config(method=name), (1, 28, 28), 10)
    for task in small_tasks[:2]:
        learner.learn(task, seed=task.index)
    for task, floor in zip(small_tasks[:2], (0.6, 0.8)):  # two MNIST digits: chance is 0.5; Fine-tune forgets task 1
        correct = learner.count_correct(task.name, task.test_x, task.test_y)
        assert correct / len(task.test_y) > floor, (name, task.name, correct)
        pred, chosen = learner.route(task.test_x, true_task=torch.full((len(task.test_y),), task.index))
        assert set(pred.tolist()) <= {0, 1, 2, 3}
        assert chosen.shape == pred.shape
    assert (pred == task.test_labels).float().mean() > 0.5  # the last task, without its label (even Fine-tune)
    assert [r.task for r in learner.records] == ["task1", "task2"]
    assert learner.records[0].parameters["total"] >= learner.backbone_parameters
    tensors = learner.task_tensors("task2")
    assert tensors and all(torch.isfinite(t.float()).all() for t in tensors.values())


@pytest.mark.slow
def test_joint_beats_every_sequential_method_and_finetune_forgets(tmp_path):
    """Class-IL on Split-MNIST, 600 real images per task: the upper bound is above the single-head
    sequential methods, and Fine-tune loses the earlier tasks."""
    results = {}
    for name in ("joint", "finetune", "ewc", "si", "lwf"):
        config = small_config(tmp_path, out=str(tmp_path / name), method=name, backbone__name="mlp", backbone__width=0.5,
                              data__train_per_task=600, data__test_per_task=200, train__epochs=3, train__reference_epochs=3)
        results[name] = run(config).metrics["scenarios"]["class-il"]
    joint = results["joint"]["average_accuracy"]
    assert joint > 80.0
    for name in ("finetune", "ewc", "si", "lwf"):
        assert joint > results[name]["average_accuracy"] + 10.0, (name, results)
    assert results["finetune"]["forgetting"] > 50.0
    assert results["finetune"]["average_accuracy"] < 40.0


def _learned(cls, task, **values):
    learner = cls(_config(**values), (1, 28, 28), 10)
    learner.learn(task, seed=0)
    return learner


def _nudge(net: torch.nn.Module, scale: float = 0.01) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))


@pytest.mark.parametrize("cls", [EWC, SI])
def test_penalty_is_zero_at_the_anchor_and_positive_away(cls, small_tasks):
    learner = _learned(cls, small_tasks[0])
    assert learner.penalty().item() == 0.0
    _nudge(learner.net)
    assert learner.penalty().item() > 0.0


def test_fisher_matches_one_image_at_a_time(small_tasks):
    learner = _learned(EWC, small_tasks[0])
    x = small_tasks[0].train_x[:6]
    units = torch.tensor([0, 1])
    fisher = fisher_diagonal(learner.net, x, units)
    expected = {k: torch.zeros_like(v) for k, v in learner.net.named_parameters()}
    for image in x:
        learner.net.zero_grad()
        logp = torch.log_softmax(learner.net(image[None])[:, units], dim=1)
        (-logp.max()).backward()
        for k, p in learner.net.named_parameters():
            expected[k] += p.grad**2 / len(x)
    for k in expected:
        torch.testing.assert_close(fisher[k], expected[k], rtol=1e-4, atol=1e-10)
    assert sum(float(v.sum()) for v in fisher.values()) > 0


def test_online_fisher_decays_by_gamma(small_tasks):
    learner = _learned(OnlineEWC, small_tasks[0], **{"online-ewc__gamma": 0.5, "online-ewc__fisher_samples": 50})
    first = {k: v.clone() for k, v in learner.importance.items()}
    learner.learn(small_tasks[1], seed=1)
    new = fisher_diagonal(learner.net, small_tasks[1].train_x[:50], torch.tensor([0, 1, 2, 3]))
    for k in first:
        torch.testing.assert_close(learner.importance[k], 0.5 * first[k] + new[k])


def test_ewc_keeps_one_penalty_per_task_as_their_sum(small_tasks):
    """EWC's summed importance and Fisher-weighted anchor give the gradient of Σ_t (λ/2)·F_t·(θ − θ*_t)²."""
    learner = _learned(EWC, small_tasks[0], ewc__fisher_samples=50)
    fisher = [{k: v.clone() for k, v in learner.importance.items()}]
    anchors = [{k: v.clone() for k, v in learner.anchor.items()}]
    learner.learn(small_tasks[1], seed=1)
    fisher.append(fisher_diagonal(learner.net, small_tasks[1].train_x[:50], torch.tensor([0, 1, 2, 3])))
    anchors.append({k: v.detach().clone() for k, v in learner.net.named_parameters()})
    _nudge(learner.net)
    learner.net.zero_grad()
    learner.penalty().backward()
    for name, p in learner.net.named_parameters():
        expected = sum(learner.config.ewc.lambda_ * f[name] * (p.detach() - a[name]) for f, a in zip(fisher, anchors))
        torch.testing.assert_close(p.grad, expected, rtol=1e-2, atol=1e-4 * float(expected.abs().max()))


def test_si_importance_follows_the_path_integral(small_tasks):
    """Ω after one task equals max(ω, 0) / (Δθ² + ξ), with ω = −Σ g·Δθ summed over the steps."""
    learner = SI(_config(train__iterations=5), (1, 28, 28), 10)
    start = {k: v.detach().clone() for k, v in learner.net.named_parameters()}
    path = {k: torch.zeros_like(v) for k, v in start.items()}
    previous = {k: v.clone() for k, v in start.items()}
    hook = learner.after_step

    def recording_hook():
        for k, p in learner.net.named_parameters():
            path[k] -= p.grad * (p.detach() - previous[k])
            previous[k] = p.detach().clone()
        hook()

    learner.after_step = recording_hook
    learner.learn(small_tasks[0], seed=0)
    assert sum(float(v.sum()) for v in learner.importance.values()) > 0
    for k, p in learner.net.named_parameters():
        expected = path[k].clamp_min(0) / ((p.detach() - start[k]) ** 2 + learner.config.si.xi)
        torch.testing.assert_close(learner.importance[k], expected)
    assert learner.state_numbers() == 2 * sum(p.numel() for p in learner.net.parameters())


def test_lwf_targets_come_from_the_frozen_previous_model(small_tasks):
    learner = _learned(LwF, small_tasks[0])
    x = small_tasks[1].train_x[:64]
    snapshot = copy.deepcopy(learner.net).eval()
    expected = snapshot(x)[:, [0, 1]]
    torch.testing.assert_close(learner.targets(x), expected)
    assert not any(p.requires_grad for p in learner.previous.parameters())
    assert learner.extra_loss(x, learner.net.eval()(x)[:, [0, 1]]).item() == pytest.approx(0.0, abs=1e-6)
    _nudge(learner.net, 0.1)  # training the current network must not move the targets
    torch.testing.assert_close(learner.targets(x), expected)
    assert learner.extra_loss(x, learner.net(x)[:, [0, 1]]).item() > 0
    learner.learn(small_tasks[1], seed=1)  # after task 2 the targets come from the new snapshot
    assert learner.previous_units.tolist() == [0, 1, 2, 3]
    assert not torch.allclose(learner.targets(x)[:, :2], expected)


@pytest.mark.slow
def test_single_head_on_a_domain_il_benchmark_has_no_task_to_route(tmp_path):
    """Permuted-MNIST: every task shares the ten units, so Task-IL equals domain-IL and routing is undefined."""
    from pearl_cl.commands.report import summary

    config = small_config(tmp_path, method="finetune", benchmark="permuted-mnist", backbone__name="mlp",
                          data__train_per_task=300, data__test_per_task=100, train__epochs=1, train__reference_epochs=1)
    result = run(config)
    scenarios = result.metrics["scenarios"]
    assert set(scenarios) == {"task-il", "domain-il"} and scenarios["task-il"]["fwt"] is not None
    assert {k: v for k, v in scenarios["task-il"].items() if k != "fwt"} == scenarios["domain-il"]
    assert result.metrics["routing"]["accuracy"] is None
    assert set(result.metrics["routing"]["accuracy_per_task"]) == {None}
    assert [r.parameters["head"] for r in result.records][1:] == [0] * 9  # no new units after the first task
    assert "- (none: arg-max over one head)" in summary(result)
    assert (result.directory / "routing_accuracy.csv").read_text().splitlines()[-1] == "task10" + "," * 10
