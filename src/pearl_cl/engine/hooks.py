"""The engine's built-in hooks: evaluation, checkpoint (the run directory) and the caller's
per-task callback (our design; the loggers are in :mod:`pearl_cl.engine.loggers`)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pearl_cl.engine.engine import Hook, RunState
from pearl_cl.engine.outputs import write_outputs
from pearl_cl.engine.progress import DOMAIN, SCENARIO
from pearl_cl.errors import PearlError
from pearl_cl.methods.record import TaskRecord


class Evaluate(Hook):
    """After a task is learned: the test counts of every task seen so far, with the task label
    (Task-IL) and without it through the configured router (domain-IL, and class-IL where tasks
    have classes of their own), into ``state.progress``; and, for forward transfer, the Task-IL
    count of each task before it is learned (where the method can predict an unlearned task)."""

    def before_run(self, state: RunState) -> None:
        """Count every task on the network before any task is learned (a fresh run only)."""
        progress = state.progress
        if progress.learned:
            return
        for j, task in enumerate(state.bench.tasks):
            counted = state.learner.count_unseen(task)
            if counted is None:
                return
            progress.initial[j] = counted

    def after_learn(self, state: RunState, index: int) -> None:
        """Fill row ``index`` of the progress's count matrices and the next task's count ahead."""
        progress, tasks = state.progress, state.bench.tasks
        for j, counts in enumerate(state.learner.evaluate(list(tasks[: index + 1]))):
            progress.correct[SCENARIO][index, j] = counts.task_il
            progress.correct[progress.scenario][index, j], progress.routed[index, j] = counts.routed_right, counts.routed_own
            if DOMAIN in progress.correct and progress.scenario != DOMAIN:
                progress.correct[DOMAIN][index, j] = counts.local_right
        if index + 1 < len(tasks):
            counted = state.learner.count_unseen(tasks[index + 1])
            if counted is not None:
                progress.ahead[index + 1] = counted


class Checkpoint(Hook):
    """The run directory: after each task its tensors (``tasks/<task>.safetensors``), the files
    derived from the progress, then ``progress.json`` (the commit point). A resumed run first
    rewrites the derived files, repairing any a stop left stale; a failed task leaves the status
    ``failed at <task>``."""

    def before_run(self, state: RunState) -> None:
        """Rewrite the derived files of a resumed run."""
        if state.progress.learned:
            state.metrics = write_outputs(state.store, state.config, state.bench.source, state.progress, state.learner,
                                          state.peak)

    def after_task(self, state: RunState, index: int) -> None:
        """Save task ``index``'s tensors, then every derived file."""
        name = state.bench.tasks[index].name
        state.store.write_tensors(f"tasks/{name}.safetensors", state.learner.task_tensors(name), {"task": name})
        state.metrics = write_outputs(state.store, state.config, state.bench.source, state.progress, state.learner,
                                      state.peak)

    def on_failure(self, state: RunState, index: int, error: PearlError) -> None:
        """Record the failure in ``metrics.json``."""
        n = len(state.bench.tasks)
        write_outputs(state.store, state.config, state.bench.source, state.progress, state.learner, state.peak,
                      status=f"failed at {state.bench.tasks[index].name}: {state.progress.learned} of {n} tasks learned")


class TaskCallback(Hook):
    """Calls ``on_task(record, accuracy)`` after each task is saved, with the task's record and
    the Task-IL accuracy matrix so far (``(i+1, i+1)``, %); the CLI prints a line."""

    def __init__(self, on_task: Callable[[TaskRecord, np.ndarray], None]) -> None:
        self.on_task = on_task

    def after_task(self, state: RunState, index: int) -> None:
        """Call ``on_task``."""
        self.on_task(state.progress.records[-1], state.progress.accuracy()[SCENARIO])
