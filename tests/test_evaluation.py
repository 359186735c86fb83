"""Evaluation after each task: the kept-outputs path of methods with frozen branches gives the
counts that routing every image afresh gives, and does not pass old branches over old images again."""

from __future__ import annotations

import pytest
import torch

from pearl_cl.config import load_config
from pearl_cl.learning.evaluation import evaluate_tasks
from pearl_cl.registry import METHODS, ROUTERS


def _learn_three(method: str, small_tasks):
    config = load_config(method=method, backbone__name="mlp", backbone__width=0.25, train__batch_size=32,
                         pearl__epsilon=0.05, pearl__r_max=4, routing__fit_all=True)
    torch.manual_seed(0)
    learner = METHODS[method](config, (1, 28, 28), 10)
    for i, task in enumerate(small_tasks[:3]):
        learner.learn(task, i)
    return learner, list(small_tasks[:3])


@pytest.fixture(scope="module", params=["pearl", "separate"])
def learned(request, small_tasks):
    return _learn_three(request.param, small_tasks)


@pytest.mark.parametrize("router", ROUTERS.names())
def test_kept_outputs_give_the_counts_of_routing_afresh(learned, router):
    learner, tasks = learned
    fresh = evaluate_tasks(learner, tasks, router)
    kept = learner.evaluate(tasks, router)
    assert kept == fresh
    assert learner.evaluate(tasks, router) == fresh  # and again, from what was kept
    assert all(c.task_il > 0.8 * len(t.test_y) for c, t in zip(kept, tasks))  # real, learned branches


@pytest.mark.parametrize("method", ["pearl", "separate"])
def test_kept_outputs_spare_old_branches_on_old_images(method, small_tasks):
    config = load_config(method=method, backbone__name="mlp", backbone__width=0.25, train__batch_size=32)
    learner, tasks = METHODS[method](config, (1, 28, 28), 10), list(small_tasks[:3])
    for i, task in enumerate(tasks[:2]):
        learner.learn(task, i)
    learner.evaluate(tasks[:2])
    learner.learn(tasks[2], 2)
    calls = []
    features = learner.model.features
    learner.model.features = lambda x, task: calls.append(task) or features(x, task)
    try:
        learner.evaluate(tasks)
    finally:
        del learner.model.features
    # only the new: task3's branch over all three test sets, task2's branch and the reference over
    # task3's images (routing afresh would pass 3 branches + the reference over all 3 test sets)
    batches = -(-len(tasks[0].test_y) // 128)
    assert calls.count(tasks[2].name) == 3 * batches
    assert calls.count(tasks[1].name) == calls.count(tasks[0].name) == batches


def test_evaluate_rejects_tasks_out_of_order(learned):
    learner, tasks = learned
    with pytest.raises(ValueError, match="first tasks learned"):
        learner.evaluate([tasks[1]])
