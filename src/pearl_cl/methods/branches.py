"""What the methods with one branch per task share: Task-IL through the task's own branch and
class-/domain-IL through a router over all branches (DESIGN.md §2 step 6; our design).

PEARL, fixed-rank LoRA and Separate networks subclass :class:`TaskBranches`; their ``model``
has ``features(x, task)``, ``heads[task]``, ``reference_task`` and ``forward(x, task)``, which is
all :mod:`pearl_cl.routing` needs.
"""

from __future__ import annotations

import torch

from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.methods.record import TaskRecord
from pearl_cl.metrics import task_accuracy
from pearl_cl.routing import TaskStatistics, route, task_statistics
from pearl_cl.training import count_correct


class TaskBranches:
    """Evaluation and router statistics of a method with one branch per task.

    Subclasses set ``self.model`` and implement ``learn(task, seed)``, ending it with
    :meth:`finish_task`.
    """

    identifies_tasks = True  # route() chooses one task branch per image

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.model: torch.nn.Module
        self.records: list[TaskRecord] = []
        self.statistics: dict[str, TaskStatistics] = {}

    @property
    def router_name(self) -> str:
        """The router that ``route`` uses by default (``routing.router``)."""
        return self.config.routing.router

    def finish_task(self, task: TaskData, record: TaskRecord) -> TaskRecord:
        """Measure ``task``'s validation accuracy, compute its router statistics and append
        ``record`` (returned)."""
        if len(task.val_y):
            record.val_accuracy = task_accuracy(self.count_correct(task.name, task.val_x, task.val_y), len(task.val_y))
        self.statistics[task.name] = task_statistics(self.model, task.name, len(task.classes), task.train_x, task.train_y,
                                                     task.val_x, self.config.routing.shrinkage)
        self.records.append(record)
        return record

    def count_correct(self, task: str, x: torch.Tensor, y: torch.Tensor) -> int:
        """Task-IL: correct predictions of task ``task``'s branch on ``x`` ``(N, C, H, W)``, ``y``
        ``(N,)`` local labels."""
        return count_correct(self.model, lambda xb: self.model(xb, task), x, y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N,)`` global classes, ``(N,)`` task indices and ``(N,)`` confidences (softmax
        probability of the class, in [0, 1]) for ``x`` ``(N, C, H, W)``: through task ``task``'s
        branch (Task-IL) or, without it, the branch the router picks.

        Raises:
            KeyError: ``task`` was not learned (names the learned ones).
        """
        names = [r.task for r in self.records]
        if task is not None and task not in names:
            raise KeyError(f"task {task!r} was not learned; learned: {', '.join(names)}")
        self.model.eval()
        chosen = torch.full((len(x),), names.index(task)) if task is not None else self.route(x)[1]
        classes, confidence = torch.empty(len(x), dtype=torch.long), torch.empty(len(x))
        for t in chosen.unique().tolist():
            idx = torch.nonzero(chosen == t).squeeze(1)
            probs = torch.softmax(self.model(x[idx], names[t]), dim=1)
            confidence[idx], local = probs.max(dim=1)
            classes[idx] = torch.tensor(self.records[t].classes)[local]
        return classes, chosen, confidence

    def route(self, x: torch.Tensor, true_task: torch.Tensor | None = None, router: str | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-/domain-IL: ``(N,)`` predicted global classes and ``(N,)`` chosen task indices
        (in learning order) for ``x`` ``(N, C, H, W)``, choosing among every task learned so far
        with ``router`` (default ``routing.router``); see :func:`pearl_cl.routing.route`."""
        tasks = [r.task for r in self.records]
        return route(self.model, x, tasks, [r.classes for r in self.records], [self.statistics[t] for t in tasks],
                     router or self.config.routing.router, self.config.routing.shrinkage, true_task)
