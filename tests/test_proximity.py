"""Proximity measures on constructed cases with a known order, the budget rule's arithmetic, and
the graded-distance benchmark."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pearl_cl.config import load_config
from pearl_cl.core.adapters import reference_copy
from pearl_cl.core.rank import RankRule, budget_ranks, split_budget, task_budget
from pearl_cl.data.benchmarks import recut
from pearl_cl.data.graded import DISTANCES, VIEWS, partial_permutation, view_images
from pearl_cl.errors import ConfigError
from pearl_cl.methods.pearl import Pearl
from pearl_cl.registry import BENCHMARKS, PROXIMITIES


@pytest.fixture(scope="module")
def reference(small_tasks):
    """An MLP trained on task 1 (digits 0 and 1) of the small Split-MNIST, frozen."""
    config = load_config(backbone__name="mlp", backbone__width=0.25, train__reference_epochs=3)
    learner = Pearl(config, (1, 28, 28))
    learner.learn(small_tasks[0], 0)
    return reference_copy(learner.model), config.fit_settings("pearl.probe_epochs", "train.lr", iterations=False)


@pytest.mark.parametrize("name", PROXIMITIES.names())
def test_the_reference_task_is_nearer_than_the_same_images_with_random_labels(name, reference, small_tasks):
    backbone, settings = reference
    same = small_tasks[0]
    generator = torch.Generator().manual_seed(0)
    scrambled = dataclasses.replace(same, train_y=same.train_y[torch.randperm(len(same.train_y), generator=generator)],
                                    val_y=same.val_y[torch.randperm(len(same.val_y), generator=generator)])
    near, far = PROXIMITIES.get(name)(backbone, same, settings, 0), PROXIMITIES.get(name)(backbone, scrambled, settings, 0)
    assert 0 <= near.task < far.task
    assert set(near.layers) == {"fc1", "fc2"} and sum(near.layers.values()) == pytest.approx(1.0)


def test_linear_probe_sees_a_new_digit_pair_between_the_reference_and_noise(reference, small_tasks):
    backbone, settings = reference
    measure = PROXIMITIES.get("linear-probe")
    same, new = measure(backbone, small_tasks[0], settings, 0).task, measure(backbone, small_tasks[2], settings, 0).task
    assert same < new < 1.0


@pytest.mark.parametrize("budget, shares, caps, expected", [
    (10, {"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 10, "b": 10, "c": 10}, {"a": 5, "b": 3, "c": 2}),
    (10, {"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 3, "b": 10, "c": 10}, {"a": 3, "b": 4, "c": 3}),
    (100, {"a": 0.5, "b": 0.5}, {"a": 3, "b": 4}, {"a": 3, "b": 4}),
    (5, {"a": 0.0, "b": 0.0}, {"a": 3, "b": 4}, {"a": 3, "b": 2}),
    (0, {"a": 1.0}, {"a": 3}, {"a": 0}),
])
def test_split_budget_spends_the_budget_within_the_caps(budget, shares, caps, expected):
    ranks = split_budget(budget, shares, caps)
    assert ranks == expected
    assert sum(ranks.values()) == min(budget, sum(caps.values()))
    assert all(ranks[n] <= caps[n] for n in caps)


@pytest.mark.parametrize("seed", range(20))
def test_split_budget_sums_to_the_budget_on_random_cases(seed):
    generator = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 8, (1,), generator=generator))
    shares = {f"l{i}": float(v) for i, v in enumerate(torch.rand(n, generator=generator))}
    caps = {f"l{i}": int(v) for i, v in enumerate(torch.randint(0, 20, (n,), generator=generator))}
    budget = int(torch.randint(0, 100, (1,), generator=generator))
    ranks = split_budget(budget, shares, caps)
    assert sum(ranks.values()) == min(budget, sum(caps.values()))
    assert all(0 <= ranks[k] <= caps[k] for k in caps)


def test_task_budget_grows_with_proximity_and_saturates():
    budgets = [task_budget(p, 20, 16, 0.25) for p in (0.0, 0.01, 0.1, 0.25, 0.9)]
    assert budgets[0] == 0 and budgets == sorted(budgets) and budgets[-1] == budgets[-2] == 20 * 16
    assert budgets[1] >= 1  # any distance at all gets some rank


def test_budget_ranks_follow_the_shares_and_record_them():
    rule = RankRule("budget", r_max=8, saturation=0.5)
    ranks = budget_ranks(0.25, {"a": 0.5, "b": 0.5}, {"a": (50, 100), "b": (3, 9)}, rule)
    assert [ranks["a"].rank, ranks["b"].rank] == [5, 3]  # budget 2·8·0.25/0.5 = 8; b is capped at 3, a takes the rest
    assert ranks["a"].proximity == 0.5
    assert {r.rank for r in budget_ranks(0.0, {"a": 0.5, "b": 0.5}, {"a": (50, 100), "b": (3, 9)}, rule).values()} == {0}


def test_recut_gives_a_large_first_task_then_smaller_ones_and_refuses_domain_benchmarks():
    spec = BENCHMARKS["split-mnist"]
    assert recut(spec, list(range(10)), 4, 3) == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert recut(spec, list(range(10)), None, 4) == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert recut(spec, list(range(10)), None, None) == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    with pytest.raises(ConfigError, match="rotated-mnist is domain-incremental"):
        recut(BENCHMARKS["rotated-mnist"], list(range(10)), 5, None)
    with pytest.raises(ConfigError, match="leaves no class for a second task"):
        recut(spec, list(range(10)), 10, None)


def test_graded_views_are_what_they_claim():
    assert len(VIEWS) == 13 and len(DISTANCES) == 12 and DISTANCES == tuple(sorted(DISTANCES))
    assert BENCHMARKS["graded-mnist"].task_distances == (0, *DISTANCES)
    perm = partial_permutation(784, 0.3, 7)
    assert sorted(perm.tolist()) == list(range(784)) and 0.25 * 784 <= int((perm != torch.arange(784)).sum()) <= 0.3 * 784
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(view_images("rot90", images), torch.rot90(images, 1, dims=(2, 3)))
    assert torch.equal(view_images("copy", images), images)
    moved = view_images("perm100", images)
    assert torch.equal(moved.flatten(1).sort(dim=1).values, images.flatten(1).sort(dim=1).values)


@pytest.mark.slow
def test_the_budget_rule_gives_far_tasks_more_rank_than_near_ones(tmp_path):
    """graded-mnist on a real subset: the copy of the reference task gets the least rank, the
    clothing and animal tasks the most; every task's ranks sum to its budget."""
    from pearl_cl.engine.runner import run

    config = load_config(benchmark="graded-mnist", out=str(tmp_path / "run"), backbone__name="mlp", backbone__width=0.5,
                         data__train_per_task=400, data__test_per_task=100, train__epochs=3, train__reference_epochs=3,
                         pearl__rank_rule="budget", pearl__init="zero")
    result = run(config)
    total = {r.task: sum(lr.rank for lr in r.ranks.values()) for r in result.records if not r.reference}
    near, far = total["task2"], [total[f"task{k}"] for k in (10, 11, 12, 13)]
    assert near < min(far)
    assert min(total.values()) == near
