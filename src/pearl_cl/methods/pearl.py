"""PEARL: a reference task with all weights free, then one dynamic-rank LoRA adapter per task.

Source: Bhat, Yazdani, Arani, Zonooz, "Parameter Efficient Continual Learning with Dynamic
Low-Rank Adaptation" (arXiv 2505.11998, 2025), as read in DESIGN.md §2: train the reference task
(step 1); for each later task run a proximity probe (step 2), choose a rank per layer from the
probe's displacement (step 3, :mod:`pearl_cl.rank`), initialise the task's adapter (step 4,
:mod:`pearl_cl.adapters`) and train only that task's adapter, BatchNorm and head (step 5).
Task-IL inference uses the task's own branch (step 6). The first task of the sequence is the
reference task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from peft import get_peft_model_state_dict

from pearl_cl.adapters import add_task_adapter, reference_copy, task_parameters
from pearl_cl.backbones import adaptable_layers, build_backbone
from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.metrics import task_accuracy
from pearl_cl.model import ContinualModel
from pearl_cl.probe import run_probe
from pearl_cl.rank import LayerRank, allocate_ranks
from pearl_cl.routing import TaskStatistics, route, task_statistics
from pearl_cl.training import FitStats, count_correct, fit


@dataclass
class TaskRecord:
    """What learning one task produced (a row of the run's task table).

    Attributes:
        task: task name (``"task1"``…); ``classes``: its global class ids.
        reference: True for the reference task (all weights trained).
        ranks: layer → :class:`~pearl_cl.rank.LayerRank` (empty for the reference task).
        parameters: parameter counts the task owns, keys ``backbone`` (W_ref, reference task
            only), ``adapter`` (LoRA factors), ``norm`` (BatchNorm weight and bias; the running
            mean and variance are stored too but are statistics, not parameters), ``head`` and
            ``total``.
        seconds: wall time in seconds, keys ``probe``, ``rank``, ``train``.
        train_loss: mean training cross-entropy of the last epoch.
        val_accuracy: accuracy (%) on the task's validation split after training.
    """

    task: str
    classes: tuple[int, ...]
    reference: bool
    ranks: dict[str, LayerRank] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    train_loss: float = float("nan")
    val_accuracy: float = float("nan")


def _count(params: dict[str, torch.nn.Parameter], marker: str) -> int:
    return sum(p.numel() for name, p in params.items() if marker in name)


def _parameter_counts(params: dict[str, torch.nn.Parameter]) -> dict[str, int]:
    """Split the names of :func:`~pearl_cl.adapters.task_parameters` into the TaskRecord keys."""
    counts = {"adapter": _count(params, ".lora_"), "norm": _count(params, ".modules_to_save."),
              "head": _count(params, "heads.")}
    counts["backbone"] = sum(p.numel() for p in params.values()) - sum(counts.values())
    counts["total"] = sum(counts.values())
    return counts


class Pearl:
    """The PEARL learner: ``learn(task, seed)`` one task at a time, then evaluate any task seen.

    Args:
        config: the run config (``backbone``, ``train``, ``pearl`` sections are used).
        image_shape: ``(C, H, W)`` of the benchmark's images.

    Raises:
        ConfigError: invalid rank-rule knobs or backbone.
    """

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int]) -> None:
        self.config = config
        self.rule = config.pearl.to_rank_rule()
        self.model = ContinualModel(build_backbone(config.backbone.name, image_shape, config.backbone.width))
        self.records: list[TaskRecord] = []
        self.statistics: dict[str, TaskStatistics] = {}

    @property
    def backbone_parameters(self) -> int:
        """Parameter count of the backbone (W_ref), without heads or adapters."""
        return _parameter_counts(task_parameters(self.model, self.model.reference_task))["backbone"]

    def learn(self, task: TaskData, seed: int) -> TaskRecord:
        """Learn ``task``; the first task learned is the reference task. Returns its record.

        Raises:
            TrainingError: the loss became NaN or infinite. The failed task's adapter and head
                stay in the model (rolling them back is not implemented yet); earlier tasks are
                untouched.
        """
        torch.manual_seed(seed)
        if not self.records:
            record = self._learn_reference(task, seed)
        else:
            record = self._learn_adapter(task, seed)
        if len(task.val_y):
            record.val_accuracy = task_accuracy(self.count_correct(task.name, task.val_x, task.val_y), len(task.val_y))
        self.statistics[task.name] = task_statistics(self.model, task.name, len(task.classes), task.train_x, task.train_y,
                                                     task.val_x, self.config.routing.shrinkage)
        self.records.append(record)
        return record

    def _fit(self, task: TaskData, epochs: str, lr: str, seed: int, phase: str) -> tuple[dict, FitStats]:
        """Train task ``task``'s own parameters; ``epochs`` and ``lr`` are config keys."""
        params = task_parameters(self.model, task.name)
        stats = fit(self.model, lambda xb: self.model(xb, task.name), params.values(), task.train_x, task.train_y,
                    self.config.fit_settings(epochs, lr), seed, desc=f"{task.name} {phase}")
        return params, stats

    def _learn_reference(self, task: TaskData, seed: int) -> TaskRecord:
        self.model.add_head(task.name, len(task.classes))
        self.model.reference_task = task.name
        params, stats = self._fit(task, "train.reference_epochs", "train.lr", seed, "reference")
        self.model.backbone.requires_grad_(False)
        return TaskRecord(task.name, task.classes, True, {}, _parameter_counts(params),
                          {"probe": 0.0, "rank": 0.0, "train": stats.seconds}, stats.final_loss)

    def _learn_adapter(self, task: TaskData, seed: int) -> TaskRecord:
        cfg = self.config.pearl
        start = time.perf_counter()
        reference = reference_copy(self.model)
        deltas = run_probe(cfg.probe, reference, task, self.config.fit_settings("pearl.probe_epochs", "train.lr"), seed)
        probed = time.perf_counter()
        weights = {name: m.weight.detach() for name, m in adaptable_layers(reference).items()}
        ranks = allocate_ranks(deltas, weights, self.rule)
        ranked = time.perf_counter()
        add_task_adapter(self.model, task.name, {name: r.rank for name, r in ranks.items()}, cfg.init, deltas)
        self.model.add_head(task.name, len(task.classes))
        params, stats = self._fit(task, "train.epochs", "train.adapter_lr", seed, "adapter")
        return TaskRecord(task.name, task.classes, False, ranks, _parameter_counts(params),
                          {"probe": probed - start, "rank": ranked - probed, "train": stats.seconds}, stats.final_loss)

    def count_correct(self, task: str, x: torch.Tensor, y: torch.Tensor) -> int:
        """Task-IL: correct predictions of task ``task``'s branch on ``x`` ``(N, C, H, W)``, ``y`` ``(N,)``."""
        return count_correct(self.model, lambda xb: self.model(xb, task), x, y)

    def route(self, x: torch.Tensor, true_task: torch.Tensor | None = None, router: str | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-/domain-IL: ``(N,)`` predicted global classes and ``(N,)`` chosen task indices
        (in learning order) for ``x`` ``(N, C, H, W)``, choosing among every task learned so far
        with ``router`` (default ``routing.router``); see :func:`pearl_cl.routing.route`."""
        tasks = [r.task for r in self.records]
        return route(self.model, x, tasks, [r.classes for r in self.records], [self.statistics[t] for t in tasks],
                     router or self.config.routing.router, self.config.routing.shrinkage, true_task)

    def task_tensors(self, task: str) -> dict[str, torch.Tensor]:
        """Every tensor that belongs to task ``task``, for its safetensors file.

        The reference task's file holds the whole backbone (``backbone.*``, W_ref with the
        reference BatchNorm); a later task's holds its PEFT adapter state (``adapter.*``: LoRA
        factors, BatchNorm parameters and statistics). Both hold the task's head (``head.*``) and its
        router statistics (``router.*``, see :class:`~pearl_cl.routing.TaskStatistics`).
        """
        own = {f"head.{k}": v for k, v in self.model.heads[task].state_dict().items()}
        own.update(self.statistics[task].to_tensors())
        if task == self.model.reference_task:
            return {**{f"backbone.{k}": v for k, v in reference_copy(self.model).state_dict().items()}, **own}
        adapter = get_peft_model_state_dict(self.model.peft, adapter_name=task)
        return {**{f"adapter.{k}": v for k, v in adapter.items()}, **own}
