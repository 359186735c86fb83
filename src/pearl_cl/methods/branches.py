"""What the methods with one branch per task share: Task-IL through the task's own branch and
class-/domain-IL through a router over all branches (our design).

PEARL, fixed-rank LoRA and Separate networks subclass :class:`TaskBranches`; their ``model``
has ``features(x, task)``, ``heads[task]``, ``reference_task`` and ``forward(x, task)``, which is
all :mod:`pearl_cl.routers` needs.
"""

from __future__ import annotations

import time

import torch

from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.learning.evaluation import TaskCounts, local_labels
from pearl_cl.learning.metrics import task_accuracy
from pearl_cl.learning.training import EVAL_BATCH, count_correct
from pearl_cl.methods.learner import Learner
from pearl_cl.methods.record import TaskRecord
from pearl_cl.routers.base import Router, branch_outputs, get_router, route
from pearl_cl.routers.statistics import TaskStatistics, branch_logits, reference_features, task_statistics


class TaskBranches(Learner):
    """Evaluation and router statistics of a method with one branch per task.

    Subclasses set ``self.model`` and implement ``learn(task, seed)``, ending it with
    :meth:`finish_task`.
    """

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int], n_classes: int) -> None:
        super().__init__(config, image_shape, n_classes)
        self.model: torch.nn.Module
        self.statistics: dict[str, TaskStatistics] = {}
        self._evaluated: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    def finish_task(self, task: TaskData, record: TaskRecord) -> TaskRecord:
        """Measure ``task``'s validation accuracy, compute its router statistics (their wall
        seconds go to ``record.seconds["statistics"]``) and append ``record`` (returned)."""
        if len(task.val_y):
            record.val_accuracy = task_accuracy(self.count_correct(task.name, task.val_x, task.val_y), len(task.val_y))
        start = time.perf_counter()
        self.statistics[task.name] = task_statistics(self.model, task.name, len(task.classes), task.train_x, task.train_y,
                                                     task.val_x, self.config.routing)
        record.seconds["statistics"] = time.perf_counter() - start
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
            probs = torch.softmax(branch_logits(self.model, x[idx], names[t]), dim=1)
            confidence[idx], local = probs.max(dim=1)
            classes[idx] = torch.tensor(self.records[t].classes)[local]
        return classes, chosen, confidence

    def route(self, x: torch.Tensor, true_task: torch.Tensor | None = None, router: str | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-/domain-IL: ``(N,)`` predicted global classes and ``(N,)`` chosen task indices
        (in learning order) for ``x`` ``(N, C, H, W)``, choosing among every task learned so far
        with ``router`` (default ``routing.router``); see :func:`pearl_cl.routers.base.route`.

        Raises:
            ConfigError: unknown router.
        """
        tasks = [r.task for r in self.records]
        return route(self.model, x, tasks, [r.classes for r in self.records], [self.statistics[t] for t in tasks],
                     get_router(router or self.router_name), self.config.routing, true_task)

    @torch.no_grad()
    def evaluate(self, tasks: list[TaskData], router: str | None = None) -> list[TaskCounts]:
        """:class:`~pearl_cl.learning.evaluation.TaskCounts` of each of ``tasks`` (the first tasks learned, in
        order) on its test images, choosing among every branch learned so far with ``router``
        (default ``routing.router``).

        The same counts as :func:`pearl_cl.learning.evaluation.evaluate_tasks` (the same batches through
        the same branches; the one-pass ``reference`` and ``likelihood-ratio`` routers may differ
        in the last bits of a score), with
        less work: a learned branch never changes (``tests/test_isolation.py``),
        so what each branch predicts and scores on a task's test images is computed once and kept
        (``(N,)`` classes and scores per branch and task, and the reference features, ``(N, D_ref)``
        per task; never images), and the Task-IL count reads the task's own branch from it. After
        task i only the new branch and the new task's images need a pass, not all i + 1 branches
        over every seen task again.

        Raises:
            ValueError: ``tasks`` are not the first tasks learned.
            ConfigError: unknown router.
        """
        chosen_router = get_router(router or self.router_name)
        names = [r.task for r in self.records]
        if [t.name for t in tasks] != names[: len(tasks)]:
            raise ValueError(f"evaluate takes the first tasks learned, in order ({', '.join(names)}); "
                             f"got {', '.join(t.name for t in tasks)}")
        self.model.eval()
        counts = []
        stats = [self.statistics[n] for n in names]
        local = local_labels(tasks)
        for j, task in enumerate(tasks):
            outputs = [self._outputs(b, task, chosen_router) for b in range(len(names))]
            preds = torch.stack([p for p, _ in outputs])
            if chosen_router.per_branch:
                chosen = torch.stack([scores for _, scores in outputs]).argmax(dim=0)
            else:
                chosen = chosen_router.choose(task.test_x, lambda: self._reference_features(task), stats, self.config.routing,
                                              torch.full((len(task.test_y),), j))
            labels = task.test_labels
            pred = preds.gather(0, chosen[None]).squeeze(0)
            counts.append(TaskCounts(int((preds[j] == labels).sum()), int((pred == labels).sum()), int((chosen == j).sum()),
                                     int((local[pred] == task.test_y).sum())))
        return counts

    def _outputs(self, branch: int, task: TaskData, router: Router) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Branch ``branch``'s :func:`~pearl_cl.routers.base.branch_outputs` on ``task``'s test
        images, in batches of :data:`EVAL_BATCH`, computed once per branch, task and router."""
        name = self.records[branch].task
        key = ("outputs", name, task.name, router.name)
        kept = self._evaluated.get(key)
        if kept is None or kept[0] is not task.test_x:
            x, lookup, stats = task.test_x, torch.tensor(self.records[branch].classes), self.statistics[name]
            ref = self._reference_features(task) if router.uses_reference_features else None
            parts = [branch_outputs(self.model, x[s : s + EVAL_BATCH], name, lookup, stats, router,
                                    None if ref is None else ref[s : s + EVAL_BATCH]) for s in range(0, len(x), EVAL_BATCH)]
            scores = torch.cat([sc for _, sc in parts]) if router.per_branch else None
            kept = self._evaluated[key] = (x, torch.cat([p for p, _ in parts]), scores)
        return kept[1], kept[2]

    def _reference_features(self, task: TaskData) -> torch.Tensor:
        """``(N, D_ref)`` reference-branch features of ``task``'s test images, computed once."""
        key = ("reference_features", task.name)
        kept = self._evaluated.get(key)
        if kept is None or kept[0] is not task.test_x:
            x = task.test_x
            kept = self._evaluated[key] = (x, torch.cat([reference_features(self.model, x[s : s + EVAL_BATCH])
                                                         for s in range(0, len(x), EVAL_BATCH)]), None)
        return kept[1]
