"""Separate networks: one whole backbone and head per task, each trained from scratch.

Source: the "separate networks" baseline of the task-incremental literature (e.g. van de Ven &
Tolias, "Three scenarios for continual learning", 2019; Rusu et al., "Progressive Neural
Networks", 2016, without the lateral connections): no forgetting and no transfer, at the cost
of a full backbone per task. Without task labels it routes like PEARL (:mod:`pearl_cl.routers`),
the first task's network serving as the reference branch.
"""

from __future__ import annotations

import torch
from torch import nn

from pearl_cl import device
from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.methods.branches import TaskBranches
from pearl_cl.methods.record import TaskRecord, parameter_counts, prefixed
from pearl_cl.learning.training import fit
from pearl_cl.registry import METHODS
from pearl_cl.routers.statistics import TaskStatistics


class SeparateModel(nn.Module):
    """One backbone (``nets[task]``) and one head (``heads[task]``) per task.

    ``forward(x, task)`` maps ``(N, C, H, W)`` to ``(N, n_classes(task))`` logits through task
    ``task``'s own network; ``reference_task`` names the first task's network.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nets = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.reference_task = ""

    def features(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, feature_dim)`` through task ``task``'s network."""
        return self.nets[task](x)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, n_classes(task))`` logits of task ``task``'s network and head."""
        return self.heads[task](self.features(x, task))


@METHODS.register("separate")
class SeparateNetworks(TaskBranches):
    """Learn each task with a fresh backbone and head (the first task: ``train.reference_epochs``).

    Args:
        config: the run config (``backbone``, ``train``, ``routing`` sections are used).
        image_shape: ``(C, H, W)`` of the benchmark's images.
        n_classes: number of classes in the benchmark (unused: every task has its own head).
    """

    marker = "X"
    order = 60

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int], n_classes: int = 0) -> None:
        super().__init__(config, image_shape, n_classes)
        self.image_shape = image_shape
        self.model = SeparateModel()

    @property
    def backbone_parameters(self) -> int:
        """Parameter count of one backbone, without its head."""
        return sum(p.numel() for p in next(iter(self.model.nets.values())).parameters())


    def _add(self, task: TaskData) -> tuple[nn.Module, nn.Linear]:
        """A fresh network and head for ``task`` (the first one is the reference branch)."""
        net = self.config.backbone.build(self.image_shape)
        head = nn.Linear(net.feature_dim, len(task.classes)).to(device.current())
        self.model.nets[task.name], self.model.heads[task.name] = net, head
        if not self.records:
            self.model.reference_task = task.name
        return net, head

    def learn(self, task: TaskData, seed: int, rank_factor: int = 1) -> TaskRecord:
        """Train a new network and head on ``task`` alone. Returns its record.

        Raises:
            TrainingError: the loss became NaN or infinite.
        """
        torch.manual_seed(seed)
        first = not self.records
        net, head = self._add(task)
        keys = ("train.reference_epochs", "train.lr") if first else ("train.epochs", "train.lr")
        stats = fit(self.model, lambda xb: self.model(xb, task.name), [*net.parameters(), *head.parameters()],
                    task.train_x, task.train_y, self.config.fit_settings(*keys), seed, desc=f"{task.name} {self.name}")
        self.model.requires_grad_(False)
        counts = parameter_counts(backbone=sum(p.numel() for p in net.parameters()),
                                  head=sum(p.numel() for p in head.parameters()))
        record = TaskRecord(task.name, task.classes, first, {}, counts, {"probe": 0.0, "rank": 0.0, "train": stats.seconds},
                            stats.final_loss)
        return self.finish_task(task, record)

    def restore(self, task: TaskData, tensors: dict[str, torch.Tensor], record: TaskRecord) -> None:
        """Rebuild ``task``'s network, head and router statistics from its saved tensors."""
        net, head = self._add(task)
        net.load_state_dict(prefixed(tensors, "backbone."))
        head.load_state_dict(prefixed(tensors, "head."))
        self.model.requires_grad_(False)
        self.statistics[task.name] = TaskStatistics.from_tensors(tensors)
        self.records.append(record)

    def task_tensors(self, task: str) -> dict[str, torch.Tensor]:
        """Task ``task``'s network (``backbone.*``), head (``head.*``) and router statistics (``router.*``)."""
        return {**{f"backbone.{k}": v for k, v in self.model.nets[task].state_dict().items()},
                **{f"head.{k}": v for k, v in self.model.heads[task].state_dict().items()},
                **self.statistics[task].to_tensors()}
