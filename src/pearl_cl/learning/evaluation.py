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
    ``routed_right`` predicted right without it (the benchmark's class- or domain-IL),
    ``routed_own`` routed to the task itself, ``local_right`` whose task-local label is predicted
    right without the task label (domain-IL: the predicted class's position within its own task
    equals the image's local label)."""

    task_il: int
    routed_right: int
    routed_own: int
    local_right: int


def local_labels(tasks: Sequence[TaskData]) -> torch.Tensor:
    """``(n_classes,)`` each global class's position among its task's classes (−1: a class of no
    task in ``tasks``); tasks that share classes list them in the same order."""
    lookup = torch.full((max(max(t.classes) for t in tasks) + 1,), -1, dtype=torch.long)
    for t in tasks:
        lookup[list(t.classes)] = torch.arange(len(t.classes))
    return lookup


def routed_counts(learner, task: TaskData, index: int, local: torch.Tensor, router: str | None = None
                  ) -> tuple[int, int, int]:
    """Images of ``task``'s test set whose class the router-chosen branch predicts right, images
    routed to ``task`` (its position ``index``), and images whose predicted class has the right
    local label (``local``: :func:`local_labels`), in batches of :data:`EVAL_BATCH`; ``router``
    defaults to the learner's configured one."""
    right = routed = local_right = 0
    labels = task.test_labels
    for start in range(0, len(labels), EVAL_BATCH):
        x, y = task.test_x[start : start + EVAL_BATCH], labels[start : start + EVAL_BATCH]
        pred, chosen = learner.route(x, true_task=torch.full((len(y),), index), router=router)
        right += int((pred == y).sum())
        routed += int((chosen == index).sum())
        local_right += int((local[pred] == task.test_y[start : start + EVAL_BATCH]).sum())
    return right, routed, local_right


def evaluate_tasks(learner, tasks: Sequence[TaskData], router: str | None = None) -> list[TaskCounts]:
    """:class:`TaskCounts` of each of ``tasks`` (the learner's first tasks, in learning order):
    Task-IL through ``learner.count_correct``, the rest through :func:`routed_counts`."""
    local = local_labels(tasks)
    return [TaskCounts(learner.count_correct(task.name, task.test_x, task.test_y), *routed_counts(learner, task, j, local, router))
            for j, task in enumerate(tasks)]
