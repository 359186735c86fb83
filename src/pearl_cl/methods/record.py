"""What learning one task produced, common to every method (our design)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pearl_cl.rank import LayerRank

COUNT_KEYS = ("backbone", "adapter", "norm", "head", "total")


def parameter_counts(backbone: int = 0, adapter: int = 0, norm: int = 0, head: int = 0) -> dict[str, int]:
    """A :attr:`TaskRecord.parameters` dict: the four parts and their ``total``."""
    return {"backbone": backbone, "adapter": adapter, "norm": norm, "head": head,
            "total": backbone + adapter + norm + head}


@dataclass
class TaskRecord:
    """What learning one task produced (a row of the run's task table).

    Attributes:
        task: task name (``"task1"``…); ``classes``: its global class ids.
        reference: True for the first task, which trains a whole backbone (PEARL's reference
            task; every method's first task).
        ranks: layer → :class:`~pearl_cl.rank.LayerRank` (empty for the reference task and for
            methods without adapters).
        parameters: parameters the task added, keys ``backbone`` (a whole backbone: the first
            task, or every task of Separate networks), ``adapter`` (LoRA factors), ``norm``
            (BatchNorm weight and bias; running statistics are stored too but are statistics,
            not parameters), ``head`` (head weights and biases of the task's classes) and
            ``total``.
        state: numbers the method keeps between tasks besides parameters (EWC's Fisher and
            anchor weights, SI's importances and anchor, LwF's frozen previous model), after
            this task; 0 for methods that keep none.
        seconds: wall time in seconds, keys ``probe``, ``rank``, ``train``.
        train_loss: mean training loss of the last pass over the data.
        val_accuracy: Task-IL accuracy (%) on the task's validation split after training.
    """

    task: str
    classes: tuple[int, ...]
    reference: bool
    ranks: dict[str, LayerRank] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    train_loss: float = float("nan")
    val_accuracy: float = float("nan")
    state: int = 0
