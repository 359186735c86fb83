"""PEARL: a reference task with all weights free, then one dynamic-rank LoRA adapter per task.

Source: Bhat, Yazdani, Arani, Zonooz, "Parameter Efficient Continual Learning with Dynamic
Low-Rank Adaptation" (arXiv 2505.11998, 2025), as read in DESIGN.md §2: train the reference task
(step 1); for each later task run a proximity probe (step 2), choose a rank per layer from the
probe's displacement (step 3, :mod:`pearl_cl.rank`), initialise the task's adapter (step 4,
:mod:`pearl_cl.adapters`) and train only that task's adapter, BatchNorm and head (step 5).
Task-IL inference uses the task's own branch (step 6).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from peft import get_peft_model_state_dict

from pearl_cl.adapters import add_task_adapter, task_parameters
from pearl_cl.backbones import adaptable_layers, build_backbone
from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.model import ContinualModel
from pearl_cl.probe import run_probe
from pearl_cl.rank import LayerRank, RankRule, allocate_ranks
from pearl_cl.training import FitSettings, count_correct, fit


@dataclass
class TaskRecord:
    """What learning one task produced (a row of the run's task table).

    Attributes:
        task: task name (``"task1"``…); ``classes``: its global class ids.
        reference: True for the reference task (all weights trained).
        ranks: layer → :class:`~pearl_cl.rank.LayerRank` (empty for the reference task).
        parameters: parameter counts added by the task, keys ``adapter``, ``norm``, ``head``,
            ``total`` (for the reference task ``adapter`` is the whole backbone).
        seconds: wall time in seconds, keys ``probe``, ``rank``, ``train``.
        val_accuracy: accuracy (%) on the task's validation split after training.
    """

    task: str
    classes: tuple[int, ...]
    reference: bool
    ranks: dict[str, LayerRank] = field(default_factory=dict)
    parameters: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    val_accuracy: float = float("nan")


def _count(params: dict[str, torch.nn.Parameter], marker: str) -> int:
    return sum(p.numel() for name, p in params.items() if marker in name)


class Pearl:
    """The PEARL learner: ``learn(task)`` one task at a time, then evaluate any task seen.

    Args:
        config: the run config (``backbone``, ``train``, ``pearl`` sections are used).
        image_shape: ``(C, H, W)`` of the benchmark's images.
    """

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int]) -> None:
        self.config = config
        self.rule = RankRule(config.pearl.rank_rule, config.pearl.r_min, config.pearl.r_max,
                             config.pearl.epsilon, config.pearl.tau, config.pearl.fixed_rank)
        self.model = ContinualModel(build_backbone(config.backbone.name, image_shape, config.backbone.width))
        self.reference: torch.nn.Module | None = None
        self.records: list[TaskRecord] = []

    def _settings(self, epochs: int, lr: float) -> FitSettings:
        t = self.config.train
        return FitSettings(epochs, t.batch_size, lr, t.optimizer, t.weight_decay, t.momentum)

    @property
    def backbone_parameters(self) -> int:
        """Parameter count of the backbone (W_ref), without heads or adapters."""
        backbone = self.reference if self.reference is not None else self.model.backbone
        return sum(p.numel() for p in backbone.parameters())

    def learn(self, task: TaskData, seed: int) -> TaskRecord:
        """Learn ``task``; the first task is the reference task. Returns its record."""
        if self.reference is None:
            record = self._learn_reference(task, seed)
        else:
            record = self._learn_adapter(task, seed)
        correct = self.count_correct(task.name, task.val_x, task.val_y)
        record.val_accuracy = 100.0 * correct / max(len(task.val_y), 1)
        self.records.append(record)
        return record

    def _learn_reference(self, task: TaskData, seed: int) -> TaskRecord:
        torch.manual_seed(seed)
        self.model.add_head(task.name, len(task.classes))
        self.model.reference_task = task.name
        params = task_parameters(self.model, task.name)
        settings = self._settings(self.config.train.reference_epochs, self.config.train.lr)
        stats = fit(self.model, lambda xb: self.model(xb, task.name), params.values(), task.train_x, task.train_y,
                    settings, seed, desc=f"{task.name} reference")
        self.reference = copy.deepcopy(self.model.backbone).eval().requires_grad_(False)
        self.model.backbone.requires_grad_(False)
        head = _count(params, "heads.")
        backbone = sum(p.numel() for p in self.reference.parameters())
        return TaskRecord(task.name, task.classes, True, {},
                          {"adapter": backbone, "norm": 0, "head": head, "total": backbone + head},
                          {"probe": 0.0, "rank": 0.0, "train": stats.seconds})

    def _learn_adapter(self, task: TaskData, seed: int) -> TaskRecord:
        cfg = self.config.pearl
        start = time.perf_counter()
        probe_settings = self._settings(cfg.probe_epochs, self.config.train.lr)
        deltas = run_probe(cfg.probe, self.reference, task, probe_settings, seed)
        probed = time.perf_counter()
        references = {name: m.weight.detach() for name, m in adaptable_layers(self.reference).items()}
        ranks = allocate_ranks(deltas, references, self.rule)
        ranked = time.perf_counter()
        torch.manual_seed(seed)
        add_task_adapter(self.model, task.name, {name: r.rank for name, r in ranks.items()}, cfg.init, deltas)
        self.model.add_head(task.name, len(task.classes))
        params = task_parameters(self.model, task.name)
        settings = self._settings(self.config.train.epochs, self.config.train.adapter_lr)
        stats = fit(self.model, lambda xb: self.model(xb, task.name), params.values(), task.train_x, task.train_y,
                    settings, seed, desc=f"{task.name} adapter")
        counts = {"adapter": _count(params, ".lora_"), "norm": _count(params, ".modules_to_save."),
                  "head": _count(params, "heads.")}
        counts["total"] = sum(counts.values())
        return TaskRecord(task.name, task.classes, False, ranks, counts,
                          {"probe": probed - start, "rank": ranked - probed, "train": stats.seconds})

    def count_correct(self, task: str, x: torch.Tensor, y: torch.Tensor) -> int:
        """Task-IL: correct predictions of task ``task``'s branch on ``x`` ``(N, C, H, W)``, ``y`` ``(N,)``."""
        return count_correct(self.model, lambda xb: self.model(xb, task), x, y)

    def task_tensors(self, task: str) -> dict[str, torch.Tensor]:
        """Every tensor that belongs to task ``task``, for its safetensors file.

        The reference task's file holds the whole backbone (``backbone.*``); a later task's holds
        its PEFT adapter state (LoRA factors, BatchNorm parameters and statistics) and its head.
        """
        head = {f"head.{k}": v for k, v in self.model.heads[task].state_dict().items()}
        if task == self.model.reference_task:
            return {**{f"backbone.{k}": v for k, v in self.reference.state_dict().items()}, **head}
        adapter = get_peft_model_state_dict(self.model.peft, adapter_name=task)
        return {**{f"adapter.{k}": v for k, v in adapter.items()}, **head}
