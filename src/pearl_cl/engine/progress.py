"""What a run has done so far, as counts: the state a resume, rollback or inspect starts from.

Our design. ``progress.json`` is the commit point of a run directory: it is written last after
each task, so the tasks it lists have every file on disk. It holds the correct-prediction
counts behind the accuracy matrices (exact, unlike the rounded CSVs), the test-set sizes, the
seconds per task and the task records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import json

import numpy as np

from pearl_cl.learning import metrics
from pearl_cl.methods.record import TaskRecord
from pearl_cl.engine.store import sha256

SCENARIO = "task-il"  # the scenario with task labels; the others are domain-il and, for disjoint classes, class-il
DOMAIN = "domain-il"
PROGRESS = "progress.json"


def evaluated_scenarios(scenario: str) -> list[str]:
    """The scenarios a run on a benchmark of ``scenario`` (``class-il`` or ``domain-il``) is
    evaluated in: Task-IL, domain-IL and, when tasks have classes of their own, class-IL."""
    return [SCENARIO, DOMAIN] + ([scenario] if scenario != DOMAIN else [])


@dataclass
class Progress:
    """Counts of a run of T tasks after ``learned`` of them.

    Attributes:
        scenario: the benchmark's scenario without task labels (``class-il`` or ``domain-il``).
        correct: scenario (:func:`evaluated_scenarios`; a run written before domain-IL was
            counted has ``task-il`` and ``scenario`` only) → ``(T, T)`` int64, correct
            predictions on task j's test set after learning task i (row i filled once task i is
            learned).
        routed: ``(T, T)`` int64, test images of task j routed to task j after task i.
        ahead: ``(T,)`` int64, Task-IL correct predictions on task j's test set after learning
            task j − 1, before task j (−1: not measured; the method cannot predict a task it has
            not learned, or the run predates the count).
        initial: ``(T,)`` int64, the same for the network before any task was learned.
        totals: ``(T,)`` test images per task.
        seconds: wall seconds of each learned task (learning and evaluation).
        records: the learned tasks' records.
        identifies_tasks: whether the method picks a task per image (else routing is undefined).
    """

    scenario: str
    correct: dict[str, np.ndarray]
    routed: np.ndarray
    totals: np.ndarray
    seconds: list[float]
    records: list[TaskRecord]
    identifies_tasks: bool = True
    ahead: np.ndarray | None = None
    initial: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.totals)
        self.ahead = np.full(n, -1, dtype=np.int64) if self.ahead is None else self.ahead
        self.initial = np.full(n, -1, dtype=np.int64) if self.initial is None else self.initial

    @classmethod
    def start(cls, scenario: str, totals: list[int]) -> Progress:
        """Nothing learned yet, for tasks with ``totals`` test images each."""
        n = len(totals)
        correct = {name: np.zeros((n, n), dtype=np.int64) for name in evaluated_scenarios(scenario)}
        return cls(scenario, correct, np.zeros((n, n), dtype=np.int64), np.array(totals, dtype=np.int64), [], [])

    @property
    def learned(self) -> int:
        """Number of tasks learned."""
        return len(self.seconds)

    def accuracy(self) -> dict[str, np.ndarray]:
        """Scenario → ``(k, k)`` accuracy matrix in % over the k tasks learned (NaN above the diagonal)."""
        k = self.learned
        return {name: metrics.accuracy_matrix(c[:k, :k], self.totals[:k]) for name, c in self.correct.items()}

    def forward_transfer(self) -> float:
        """Task-IL forward transfer of the tasks learned so far (:func:`~pearl_cl.learning.metrics.forward_transfer`),
        percentage points; NaN when it was not measured."""
        k = self.learned
        if k < 2 or (self.ahead[1:k] < 0).any() or (self.initial[1:k] < 0).any():
            return float("nan")
        return metrics.forward_transfer(100.0 * self.ahead[:k] / self.totals[:k], 100.0 * self.initial[:k] / self.totals[:k])

    def routing(self) -> np.ndarray:
        """``(k, k)`` routing accuracy in %; all NaN when the method does not identify tasks."""
        k = self.learned
        acc = metrics.accuracy_matrix(self.routed[:k, :k], self.totals[:k])
        if not self.identifies_tasks:
            acc[:] = np.nan
        return acc

    def truncated(self, k: int) -> Progress:
        """The progress as it was after the first ``k`` tasks (rows of later tasks zeroed)."""
        def cut(a: np.ndarray, keep: int = k, fill: int = 0) -> np.ndarray:
            out = a.copy()
            out[keep:] = fill
            return out
        return Progress(self.scenario, {n: cut(c) for n, c in self.correct.items()}, cut(self.routed), self.totals.copy(),
                        self.seconds[:k], self.records[:k], self.identifies_tasks, cut(self.ahead, k + 1, -1),
                        self.initial.copy())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (read back by :meth:`from_json`) with a ``checksum`` of its own
        content, so the file can be trusted even if ``manifest.json`` was not yet updated."""
        body = self._body()
        return {**body, "checksum": _checksum(body)}

    def _body(self) -> dict[str, Any]:
        return {"tasks_learned": self.learned, "scenario": self.scenario,
                "correct": {n: c.tolist() for n, c in self.correct.items()}, "routed": self.routed.tolist(),
                "totals": self.totals.tolist(), "seconds": self.seconds, "identifies_tasks": self.identifies_tasks,
                "records": [r.to_dict() for r in self.records], "ahead": self.ahead.tolist(), "initial": self.initial.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        """Inverse of :meth:`to_json`.

        Raises:
            KeyError, TypeError, ValueError: ``data`` is not a progress file, or its checksum
                does not match its content.
        """
        body = {k: v for k, v in data.items() if k != "checksum"}
        if data.get("checksum") != _checksum(body):
            raise ValueError("its checksum does not match its content")
        records = [TaskRecord.from_dict(r) for r in data["records"]]
        n = len(data["totals"])
        if len(records) != len(data["seconds"]) or len(records) != data["tasks_learned"] or len(records) > n:
            raise ValueError("it lists a different number of records, seconds and tasks learned")
        names = set(data["correct"])
        if not {SCENARIO, data["scenario"]} <= names <= set(evaluated_scenarios(data["scenario"])) or any(
                np.shape(m) != (n, n) for m in [*data["correct"].values(), data["routed"]]):
            raise ValueError("its count matrices do not match its scenarios and tasks")
        transfer = [np.array(data[key], dtype=np.int64) if key in data else None for key in ("ahead", "initial")]
        if any(t is not None and t.shape != (n,) for t in transfer):
            raise ValueError("its forward-transfer counts do not match its tasks")
        return cls(data["scenario"], {n: np.array(c, dtype=np.int64) for n, c in data["correct"].items()},
                   np.array(data["routed"], dtype=np.int64), np.array(data["totals"], dtype=np.int64),
                   [float(s) for s in data["seconds"]], records, bool(data["identifies_tasks"]), *transfer)


def _checksum(body: dict[str, Any]) -> str:
    """SHA-256 of ``body`` as canonical JSON."""
    return sha256(json.dumps(body, sort_keys=True).encode())
