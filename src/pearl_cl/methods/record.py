"""What learning one task produced, common to every method (our design)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pearl_cl.core.rank import LayerRank

COUNT_KEYS = ("backbone", "adapter", "norm", "head", "total")


def prefixed(tensors: dict, prefix: str) -> dict:
    """The entries of ``tensors`` whose key starts with ``prefix``, with the prefix removed (the
    inverse of how ``task_tensors`` names a task file's parts)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


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
        ranks: layer → :class:`~pearl_cl.core.rank.LayerRank` (empty for the reference task and for
            methods without adapters).
        parameters: parameters the task added, keys ``backbone`` (a whole backbone: the first
            task, or every task of Separate networks), ``adapter`` (LoRA factors), ``norm``
            (BatchNorm weight and bias; running statistics are stored too but are statistics,
            not parameters), ``head`` (head weights and biases of the task's classes) and
            ``total``.
        state: numbers the method keeps between tasks besides parameters (EWC's Fisher and
            anchor weights, SI's importances and anchor, LwF's frozen previous model), after
            this task; 0 for methods that keep none.
        note: why the task was retried (its first attempt failed the guard), else empty.
        seconds: wall time in seconds, keys ``probe`` (copying W_ref, the probe and proximity
            measure, the rank rule and the SVD of the displacement), ``rank`` (building the
            adapter, its SVD initialisation and the head), ``train``, and for methods with one branch per task ``statistics`` (the router statistics).
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
    note: str = ""

    def to_dict(self) -> dict:
        """A JSON-ready dict that :meth:`from_dict` reads back (NaN as None)."""
        nan_free = {k: (None if v != v else v) for k, v in (("train_loss", self.train_loss), ("val_accuracy", self.val_accuracy))}
        return {"task": self.task, "classes": list(self.classes), "reference": self.reference,
                "ranks": [{"layer": r.layer, "shape": list(r.shape), "proximity": r.proximity, "rank": r.rank}
                          for r in self.ranks.values()],
                "parameters": self.parameters, "seconds": self.seconds, **nan_free, "state": self.state, "note": self.note}

    @classmethod
    def from_dict(cls, data: dict) -> TaskRecord:
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError, TypeError: ``data`` is not a record written by :meth:`to_dict`.
        """
        ranks = {r["layer"]: LayerRank(r["layer"], tuple(r["shape"]), r["proximity"], r["rank"]) for r in data["ranks"]}
        nan = float("nan")
        return cls(data["task"], tuple(data["classes"]), data["reference"], ranks, dict(data["parameters"]),
                   dict(data["seconds"]), nan if data["train_loss"] is None else data["train_loss"],
                   nan if data["val_accuracy"] is None else data["val_accuracy"], data["state"], data["note"])
