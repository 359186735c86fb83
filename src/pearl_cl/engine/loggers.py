"""Per-step logs of every fit, as engine hooks (our design, after the CSV and TensorBoard
loggers of Avalanche and mammoth): ``steps.csv`` in every run directory, and TensorBoard event
files under ``tensorboard/`` with ``logging.tensorboard=true``.

``steps.csv`` has one row per optimiser step of every fit: ``task``, ``attempt`` (2 for the
retry of a task that failed its guard), ``phase`` (the fit's name: ``reference``, ``probe``,
``adapter`` or the method's), ``epoch``, ``step`` (within the fit), ``loss`` (the step's batch
loss), ``lr`` and ``seconds`` (since the fit started). It is rewritten atomically after each
task, before ``progress.json`` commits the task, with the rows of every task learned, so after a
stop it holds the tasks ``progress.json`` lists (and at most one task ahead, which a resume
drops).
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

from pearl_cl.engine.engine import Hook, RunState
from pearl_cl.engine.progress import SCENARIO
from pearl_cl.engine.store import RunStore
from pearl_cl.errors import ConfigError
from pearl_cl.learning import distributed
from pearl_cl.learning.metrics import average_accuracy
from pearl_cl.learning.training import StepEvent

STEPS = "steps.csv"
COLUMNS = ("task", "attempt", "phase", "epoch", "step", "loss", "lr", "seconds")
TENSORBOARD_DIR = "tensorboard"


def saved_steps(store: RunStore, tasks: set[str]) -> list[list[str]]:
    """The rows of ``steps.csv`` in ``store`` that belong to ``tasks`` (none when the file is
    absent: a run of pearl-cl 0.1)."""
    path = store.root / STEPS
    if not path.is_file() or not tasks:
        return []
    return [row for row in list(csv.reader(io.StringIO(path.read_text())))[1:] if row and row[0] in tasks]


def keep_steps(store: RunStore, tasks: set[str]) -> None:
    """Rewrite ``steps.csv`` with the rows of ``tasks`` only (a rollback), if it exists."""
    if (store.root / STEPS).is_file():
        store.write_csv(STEPS, list(COLUMNS), saved_steps(store, tasks))


def _phase(state: RunState, index: int, event: StepEvent) -> tuple[str, str]:
    """The task's name and the fit's phase (its name without the task's, e.g. ``adapter``)."""
    task = state.bench.tasks[index].name
    return task, event.phase.removeprefix(task + " ")


class StepCSV(Hook):
    """Keeps ``steps.csv`` (columns :data:`COLUMNS`) in the run directory (process 0 only)."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.attempt = 1

    def before_run(self, state: RunState) -> None:
        """Keep the rows of the tasks already learned (a resumed run), drop any others."""
        self.rows = saved_steps(state.store, {r.task for r in state.progress.records})

    def on_step(self, state: RunState, index: int, event: StepEvent) -> None:
        """Add the step's row."""
        if distributed.is_main():
            task, phase = _phase(state, index, event)
            self.rows.append([task, str(self.attempt), phase, str(event.epoch), str(event.step), f"{event.loss:.6g}",
                              f"{event.lr:.6g}", f"{event.seconds:.3f}"])

    def on_retry(self, state: RunState, index: int) -> None:
        """Number the retry's rows attempt 2 (the failed attempt's rows stay, attempt 1)."""
        self.attempt = 2

    def after_task(self, state: RunState, index: int) -> None:
        """Rewrite ``steps.csv`` with every learned task's rows."""
        learned = {r.task for r in state.progress.records}
        self.rows = [row for row in self.rows if row[0] in learned]
        self.attempt = 1
        state.store.write_csv(STEPS, list(COLUMNS), self.rows)


def check_tensorboard() -> None:
    """Raise :class:`ConfigError` unless the ``tensorboard`` package is importable."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logging.tensorboard=true needs the tensorboard package: pip install 'pearl-cl[tensorboard]' "
                          "(or set logging.tensorboard=false)")


class TensorBoard(Hook):
    """Writes every step's loss and learning rate as TensorBoard scalars ``<task>/<phase>/loss``
    and ``<task>/<phase>/lr`` against the run's step count (a resumed run continues it, from
    ``steps.csv``), and each task's average Task-IL accuracy (%) after it as
    ``accuracy/task-il``, under ``<run>/tensorboard/`` (process 0 only).

    Raises:
        ConfigError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, directory: Path) -> None:
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory / TENSORBOARD_DIR)) if distributed.is_main() else None
        self.global_step = 0

    def before_run(self, state: RunState) -> None:
        """Continue the step count of the tasks already learned."""
        self.global_step = len(saved_steps(state.store, {r.task for r in state.progress.records}))

    def on_step(self, state: RunState, index: int, event: StepEvent) -> None:
        """Log the step's loss and learning rate."""
        if self.writer is not None:
            task, phase = _phase(state, index, event)
            self.writer.add_scalar(f"{task}/{phase}/loss", event.loss, self.global_step)
            self.writer.add_scalar(f"{task}/{phase}/lr", event.lr, self.global_step)
        self.global_step += 1

    def after_task(self, state: RunState, index: int) -> None:
        """Log the average Task-IL accuracy after the task."""
        if self.writer is not None:
            accuracy = state.progress.accuracy()[SCENARIO]
            self.writer.add_scalar("accuracy/task-il", average_accuracy(accuracy, after=index), index + 1)
            self.writer.flush()

    def after_run(self, state: RunState) -> None:
        """Close the event file."""
        if self.writer is not None:
            self.writer.close()
