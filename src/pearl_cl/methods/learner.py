"""The learner contract every continual-learning method implements (our design, after mammoth's
``ContinualModel`` and Avalanche's strategies: one class per method, registered by name).

A method is one module in ``pearl_cl/methods/`` with one class that subclasses :class:`Learner`
and is decorated with ``@METHODS.register("name")`` (:data:`pearl_cl.registry.METHODS`). Its
hyper-parameters are a dataclass named in :attr:`Learner.config_section`, which becomes the
config section ``<name>.*`` (``--set name.key=value``, listed by ``pearl-cl run
--help-config``); the engine, ``compare``, ``report``, the plots and ``export`` find the method
through the registry and read what they need from the class attributes below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from pearl_cl.errors import PearlError

if TYPE_CHECKING:
    from pearl_cl.config import RunConfig
    from pearl_cl.data.benchmarks import TaskData
    from pearl_cl.learning.evaluation import TaskCounts
    from pearl_cl.methods.record import TaskRecord


class Learner(ABC):
    """One continual-learning method: learns tasks in order, predicts with or without a task
    label, and saves and restores what each task added.

    Class attributes (read by the engine and the commands, never the method's name):
        name: the registered name (set by ``METHODS.register``).
        config_section: a dataclass of the method's hyper-parameters, defaults from the
            literature; its fields are the config keys ``<name>.<field>`` (a trailing ``_`` is
            dropped: field ``lambda_`` is key ``lambda``). It may define ``check()`` (raise
            :class:`~pearl_cl.errors.ConfigError` naming the key), ``LEGACY``, a dict from
            keys of older config files to its own keys, and ``RENAMED_FROM``, ``(old method
            name, key)``: a file whose section ``old`` holds ``key`` is read as this method's
            (:func:`pearl_cl.config.load_config`). None: no hyper-parameters.
        single_head: one shared network and head (no task branches, no router).
        has_ranks: its tasks have LoRA ranks, so a task that fails the validation guard can be
            retried with larger ranks (``learn(..., rank_factor=k)``).
        chooses_ranks: it chooses ranks per task (a fixed-rank baseline can be matched to its
            parameter budget in ``compare``).
        joined_in_plots: its runs at several settings are joined by a line in the
            accuracy-against-parameters plot (a fixed-rank frontier).
        marker, marker_size: matplotlib marker of its point in that plot.
        order: where it comes in listings and in ``compare``'s default list (ascending; ties
            by name).

    Instance attributes: ``config`` (the run config), ``records`` (one
    :class:`~pearl_cl.methods.record.TaskRecord` per task learned, in order),
    ``identifies_tasks`` (whether :meth:`route` picks a task per image).

    Args:
        config: the run config.
        image_shape: ``(C, H, W)`` of the benchmark's images.
        n_classes: number of classes in the benchmark (global class ids ``0..n_classes-1``).
    """

    name: ClassVar[str] = ""
    config_section: ClassVar[type | None] = None
    single_head: ClassVar[bool] = False
    has_ranks: ClassVar[bool] = False
    chooses_ranks: ClassVar[bool] = False
    joined_in_plots: ClassVar[bool] = False
    marker: ClassVar[str] = "o"
    marker_size: ClassVar[int] = 8
    order: ClassVar[int] = 100

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int], n_classes: int) -> None:
        self.config = config
        self.records: list[TaskRecord] = []
        self.identifies_tasks = True

    @classmethod
    def compare_labels(cls) -> list[str]:
        """The labels ``pearl-cl compare`` runs for this method by default (its name)."""
        return [cls.name]

    @classmethod
    def variant_help(cls) -> str:
        """How this method's ``compare`` variants are written (``lora-rK (K >= 1)``), or ``""``."""
        return ""

    @classmethod
    def variant(cls, label: str) -> dict[str, Any] | None:
        """The config values that ``compare`` label ``label`` stands for when it is a variant of
        this method (``lora-r4`` → ``{"lora.rank": 4}``), else None. Plain names need none."""
        return None

    @classmethod
    def matched_variant(cls) -> str | None:
        """The ``compare`` label of this method matched to the parameter budget of the
        rank-choosing method listed before it (``lora-matched``), or None when it has none."""
        return None

    @classmethod
    def matched_values(cls, budget_run: Any) -> dict[str, Any]:
        """Config values that match this method to the parameters ``budget_run`` (a
        :class:`~pearl_cl.engine.engine.RunResult` of a rank-choosing method) added per task.

        Raises:
            NotImplementedError: the method has no matched variant.
        """
        raise NotImplementedError(f"{cls.name} has no matched variant")

    @classmethod
    def setting(cls, config: RunConfig) -> str:
        """The run's distinguishing setting for tables and plot labels (``r=4``), or ``""``."""
        return ""

    @property
    def router_name(self) -> str:
        """What picks the task of an unlabelled image (a router's name, or how a single head decides)."""
        return self.config.routing.router

    @property
    @abstractmethod
    def backbone_parameters(self) -> int:
        """Parameter count of the backbone, without heads or adapters."""

    @abstractmethod
    def learn(self, task: TaskData, seed: int, rank_factor: int = 1) -> TaskRecord:
        """Learn ``task`` (the first task learned is the reference task) and append its record.

        ``rank_factor`` > 1 (only for :attr:`has_ranks` methods) multiplies every rank chosen.

        Raises:
            TrainingError: the loss became NaN or infinite; the engine rebuilds the learner from
                the run directory.
        """

    @abstractmethod
    def count_correct(self, task: str, x: torch.Tensor, y: torch.Tensor) -> int:
        """Task-IL: correct predictions for task ``task`` on ``x`` ``(N, C, H, W)`` with local
        labels ``y`` ``(N,)``."""

    def count_unseen(self, task: TaskData) -> int | None:
        """Task-IL correct predictions on ``task``'s test images before ``task`` is learned (for
        forward transfer), or None when the method cannot predict a task it has not learned (this
        default: a method whose task gets its own branch only when the task is learned)."""
        return None

    @abstractmethod
    def predict(self, x: torch.Tensor, task: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N,)`` global classes, ``(N,)`` task indices (−1: no task identified) and ``(N,)``
        confidences in [0, 1] for ``x`` ``(N, C, H, W)``, with task label ``task`` (Task-IL) or
        without (class-/domain-IL).

        Raises:
            KeyError: ``task`` was not learned.
        """

    @abstractmethod
    def route(self, x: torch.Tensor, true_task: torch.Tensor | None = None, router: str | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Without a task label: ``(N,)`` predicted global classes and ``(N,)`` chosen task
        indices (−1: none), with ``router`` (default ``routing.router``); ``true_task`` ``(N,)``
        serves oracle routers only."""

    @abstractmethod
    def evaluate(self, tasks: list[TaskData], router: str | None = None) -> list[TaskCounts]:
        """Test counts of each of ``tasks`` (the first tasks learned, in order) with and without
        task labels (:class:`~pearl_cl.learning.evaluation.TaskCounts`)."""

    @abstractmethod
    def task_tensors(self, task: str) -> dict[str, torch.Tensor]:
        """Every tensor task ``task`` added or the method keeps after it, for the task's
        safetensors file (names are the method's own)."""

    @abstractmethod
    def restore(self, task: TaskData, tensors: dict[str, torch.Tensor], record: TaskRecord) -> None:
        """Rebuild what learning ``task`` left from its :meth:`task_tensors` and record; tasks are
        restored in learning order.

        Raises:
            KeyError, RuntimeError, ValueError: the tensors do not fit (a file from another run).
        """

    def export_adapter(self, task: str, directory: Path) -> dict[str, Any]:
        """Write task ``task``'s adapter as a PEFT directory into the existing, empty
        ``directory`` (``adapter_config.json``, ``adapter_model.safetensors``,
        ``backbone.safetensors``, ``head.safetensors``); returns how to load it, for
        ``export.json``.

        Raises:
            PearlError: the method has no adapters (this default).
        """
        raise PearlError(f"a {self.name} run has no PEFT adapters to export")
