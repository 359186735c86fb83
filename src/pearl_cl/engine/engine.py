"""The staged run engine: benchmark → learner → task loop with hooks → result (our design,
after the plugin/callback loops of Avalanche and mammoth; docs/architecture.md draws it).

:func:`learn_tasks` learns the tasks after ``progress.learned`` in order. For each task it
learns under the validation guard (a failed attempt is rolled back by rebuilding the learner
from the run directory and, for a method with ranks, retried once with larger ranks), then calls
every :class:`Hook`: ``after_learn`` (evaluation fills the progress counts), then, once the
task's record and seconds are in the progress, ``after_task`` (checkpoint, loggers, the
caller's callback). Training steps reach the hooks' ``on_step`` through
:func:`~pearl_cl.learning.training.observe_steps`, so no method knows about logging. The engine
knows no method, router or file by name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import Benchmark
from pearl_cl.learning import distributed
from pearl_cl.engine.progress import Progress
from pearl_cl.engine.restore import load_learner
from pearl_cl.engine.store import RunStore
from pearl_cl.learning.training import StepEvent, observe_steps
from pearl_cl.errors import PearlError, TrainingError
from pearl_cl.methods.learner import Learner
from pearl_cl.methods.record import TaskRecord


@dataclass
class RunState:
    """What the stages of one run share: the validated ``config``, the loaded ``bench``, the
    run directory's ``store``, the ``learner`` holding the tasks learned so far, the
    ``progress`` (counts, records, seconds) and ``peak`` (see :data:`~pearl_cl.engine.outputs.PeakMemory`)."""

    config: RunConfig
    bench: Benchmark
    store: RunStore
    learner: Learner
    progress: Progress
    peak: bool | dict[str, Any]
    metrics: dict[str, Any] | None = None


@dataclass
class RunResult:
    """A finished run: its directory; ``accuracy``, scenario (``task-il`` and the benchmark's
    ``class-il`` or ``domain-il``) → ``(T, T)`` accuracy matrix in %; ``routing``, the ``(T, T)``
    matrix of the router's task-identification accuracy in %; the task records; and ``metrics``
    (the content of ``metrics.json``)."""

    directory: Path
    accuracy: dict[str, np.ndarray]
    routing: np.ndarray
    records: list[TaskRecord]
    metrics: dict[str, Any]

    @classmethod
    def of(cls, directory: Path, progress: Progress, metrics: dict[str, Any]) -> RunResult:
        """The result a run directory's ``progress`` and ``metrics`` describe."""
        return cls(directory, progress.accuracy(), progress.routing(), progress.records, metrics)


class Hook:
    """A stage of the task loop; every method is optional (our design).

    ``before_run(state)`` once before the first task to learn; ``on_step(state, index, event)``
    after every optimiser step of task ``index`` (probe included) with its
    :class:`~pearl_cl.learning.training.StepEvent`; ``on_retry(state, index)`` when the task's
    first attempt failed its guard and a second starts; ``after_learn(state, index)`` once the task
    passed its guard; ``after_task(state, index)`` once its record and seconds are in
    ``state.progress``; ``on_failure(state, index, error)`` when it failed and was rolled back;
    ``after_run(state)`` after the last task, or after a failure.
    """

    def before_run(self, state: RunState) -> None:
        """Called once before the first task to learn."""

    def on_step(self, state: RunState, index: int, event: StepEvent) -> None:
        """Called after every optimiser step of task ``index``."""

    def on_retry(self, state: RunState, index: int) -> None:
        """Called before the second attempt at task ``index``."""

    def after_learn(self, state: RunState, index: int) -> None:
        """Called when task ``index`` is learned and passed its guard."""

    def after_task(self, state: RunState, index: int) -> None:
        """Called when task ``index``'s record and seconds are in ``state.progress``."""

    def on_failure(self, state: RunState, index: int, error: PearlError) -> None:
        """Called when task ``index`` failed (the learner holds the tasks before it)."""

    def after_run(self, state: RunState) -> None:
        """Called once at the end, after success or failure."""


def task_seed(config: RunConfig, index: int) -> int:
    """The seed of task ``index`` (0-based): ``seed · 1000 + index``."""
    return config.seed * 1000 + index


def _guard(config: RunConfig, record: TaskRecord) -> str | None:
    """Why ``record``'s task fails the validation guard, or None when it passes."""
    floor = config.guard.min_val_accuracy
    if floor is not None and not record.val_accuracy >= floor:
        return f"validation accuracy {record.val_accuracy:.2f}% is below guard.min_val_accuracy={floor:g}"
    return None


def _attempt(learner: Learner, state: RunState, index: int, rank_factor: int) -> str | None:
    """Learn task ``index``; the reason it failed (loss or guard), or None."""
    try:
        record = learner.learn(state.bench.tasks[index], task_seed(state.config, index), rank_factor=rank_factor)
    except TrainingError as exc:
        return str(exc)
    return _guard(state.config, record)


def _agreed(failure: str | None) -> str | None:
    """``failure``, or, when this process passed but another failed, a reason saying so: every
    process then rolls back alike (:mod:`pearl_cl.learning.distributed`)."""
    if distributed.any_process(failure is not None) and failure is None:
        return "it failed in another process (that process prints why)"
    return failure


def learn_guarded(state: RunState, index: int, hooks: Sequence[Hook] = ()) -> Learner:
    """Learn task ``index`` under the guard (``guard.*``); returns the learner that holds it.

    A failed attempt is rolled back by rebuilding the learner from the run directory (tasks
    before ``index``, untouched on disk); a method with ranks then retries once with its ranks
    times ``guard.rank_factor`` when ``guard.retry`` is set, after calling each hook's
    ``on_retry``.

    Raises:
        TrainingError: the task failed (and its retry failed); the run directory, never written
            for it, holds the tasks before it.
    """
    config, store, task = state.config, state.store, state.bench.tasks[index]
    failure = _agreed(_attempt(state.learner, state, index, 1))
    if failure is None:
        return state.learner
    if config.guard.retry and state.learner.has_ranks and index > 0:  # the reference task has no ranks to enlarge
        learner = load_learner(config, state.bench, store, state.progress)
        for hook in hooks:
            hook.on_retry(state, index)
        second = _agreed(_attempt(learner, state, index, config.guard.rank_factor))
        if second is None:
            learner.records[-1].note = f"first attempt failed ({failure}); retried with ranks x{config.guard.rank_factor}"
            return learner
        failure = f"{failure}; the retry with ranks x{config.guard.rank_factor} failed too: {second}"
    raise TrainingError(f"{task.name} failed and was rolled back: {failure}. {store.root} keeps the {index} task(s) "
                        f"learned before it; start a new run with a changed config, or continue this one with "
                        f"pearl-cl run --resume {store.root} and a changed guard (--set guard.…)")


def _step_observer(state: RunState, index: int, hooks: list[Hook]) -> Callable[[StepEvent], None]:
    """Passes every step event of task ``index`` to each hook's ``on_step``."""

    def observe(event: StepEvent) -> None:
        for hook in hooks:
            hook.on_step(state, index, event)

    return observe


def learn_tasks(state: RunState, hooks: list[Hook]) -> RunResult:
    """Learn the tasks after ``state.progress.learned``, calling ``hooks`` at every stage.

    Raises:
        PearlError: a task failed (see :func:`learn_guarded`); the hooks' ``on_failure`` and
            ``after_run`` have run.
    """
    progress = state.progress
    for hook in hooks:
        hook.before_run(state)
    try:
        for i in range(progress.learned, len(state.bench.tasks)):
            start = time.perf_counter()
            try:
                with observe_steps(_step_observer(state, i, hooks)):
                    state.learner = learn_guarded(state, i, hooks)
            except PearlError as exc:
                for hook in hooks:
                    hook.on_failure(state, i, exc)
                raise
            for hook in hooks:
                hook.after_learn(state, i)
            progress.seconds.append(time.perf_counter() - start)
            progress.records.append(state.learner.records[-1])
            progress.identifies_tasks = state.learner.identifies_tasks
            for hook in hooks:
                hook.after_task(state, i)
    finally:
        for hook in hooks:
            hook.after_run(state)
    return RunResult.of(state.store.root, progress, state.metrics or {})
