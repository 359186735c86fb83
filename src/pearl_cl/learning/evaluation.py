"""Test-set evaluation of a learner after each task: the counts behind the accuracy matrices and
the routing accuracy (our design).

:func:`routed_counts` and :func:`evaluate_tasks` route every image afresh through the learner's
``route`` (any method). Methods whose task branches are frozen once learned evaluate faster
through their own ``evaluate`` (:class:`~pearl_cl.methods.branches.TaskBranches`), which must
give the same counts.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from pearl_cl.data.benchmarks import TaskData
from pearl_cl.learning.training import EVAL_BATCH


class TaskCounts(NamedTuple):
    """Counts on one task's test images: ``task_il`` predicted right with the task label,
    ``routed_right`` predicted right without it (class- or domain-IL), ``routed_own`` routed to
    the task itself."""

    task_il: int
    routed_right: int
    routed_own: int


def routed_counts(learner, task: TaskData, index: int, router: str | None = None) -> tuple[int, int]:
    """Images of ``task``'s test set whose class the router-chosen branch predicts right, and
    images routed to ``task`` (its position ``index``), in batches of :data:`EVAL_BATCH`;
    ``router`` defaults to the learner's configured one."""
    right = routed = 0
    labels = task.test_labels
    for start in range(0, len(labels), EVAL_BATCH):
        x, y = task.test_x[start : start + EVAL_BATCH], labels[start : start + EVAL_BATCH]
        pred, chosen = learner.route(x, true_task=torch.full((len(y),), index), router=router)
        right += int((pred == y).sum())
        routed += int((chosen == index).sum())
    return right, routed


def evaluate_tasks(learner, tasks: Sequence[TaskData], router: str | None = None) -> list[TaskCounts]:
    """:class:`TaskCounts` of each of ``tasks`` (the learner's first tasks, in learning order):
    Task-IL through ``learner.count_correct``, the rest through :func:`routed_counts`."""
    return [TaskCounts(learner.count_correct(task.name, task.test_x, task.test_y), *routed_counts(learner, task, j, router))
            for j, task in enumerate(tasks)]
