"""Methods with one shared network and one expanding head: Fine-tune, Joint, EWC, SI, LwF.

Source: the set-up of van de Ven & Tolias, "Three scenarios for continual learning" (2019) and
Hsu et al., "Re-evaluating Continual Learning Scenarios" (2018). The head has one output unit
per class of the benchmark; the units of the classes seen so far are *active*. How a task is
trained depends on the run's ``scenario``: ``class-il`` uses a softmax over every active unit,
so the head expands by the new classes' units with every task; ``task-il`` a softmax over each
image's own task's units only (a masked, in effect multi-headed, output layer: the other units'
logits get no gradient); ``domain-il`` runs on the benchmark's task-local labels
(:func:`pearl_cl.data.benchmarks.scenario_view`), so every task shares the same units. Class-IL
(and domain-IL) predicts the arg-max over all active units; Task-IL masks the head to the task's
own classes. When tasks share their units, Task-IL and domain-IL predictions coincide and there
is no task to identify. One optimiser serves every task unless ``train.reset_optimizer`` is set.

Subclasses change the training data (:meth:`SingleHead.training_data`), add a term to the loss
(``extra_loss(xb, logits)``), watch every optimiser step (``after_step()``) or act before and
after each task (:meth:`SingleHead.begin_task`, :meth:`SingleHead.end_task`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pearl_cl import device
from pearl_cl.config import RunConfig
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.data.pixels import NormalisedImages
from pearl_cl.learning.evaluation import TaskCounts, evaluate_tasks
from pearl_cl.learning.metrics import task_accuracy
from pearl_cl.learning.training import (EVAL_BATCH, count_correct, fit, load_optimizer_tensors, make_optimizer,
                                        optimizer_tensors)
from pearl_cl.methods.learner import Learner
from pearl_cl.methods.record import TaskRecord, parameter_counts, prefixed


def quadratic_penalty(net: nn.Module, importance: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_k importance_k·(θ_k − anchor_k)² over ``net``'s parameters named in ``importance`` (a
    scalar; 0 when it is empty) — the form of EWC's and SI's penalties."""
    total = torch.zeros(())
    for name, p in net.named_parameters():
        if name in importance:
            total = total + (importance[name] * (p - anchor[name]) ** 2).sum()
    return total


class Classifier(nn.Module):
    """A backbone and one Linear head over all ``n_classes`` classes: ``(N, C, H, W)`` →
    ``(N, n_classes)`` logits (unit ``k`` is global class ``k``)."""

    def __init__(self, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, n_classes).to(device.current())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, n_classes)`` logits."""
        return self.head(self.backbone(x))


class SingleHead(Learner):
    """The shared base: train the whole network on each task in turn with the expanding head.

    Alone it is Fine-tune (:class:`~pearl_cl.methods.finetune.Finetune`); the other single-head
    methods change its hooks (the :class:`~pearl_cl.methods.learner.Learner` contract).

    Args:
        config: the run config (``backbone``, ``train`` and the method's own section are used).
        image_shape: ``(C, H, W)`` of the benchmark's images.
        n_classes: number of head units: one per global class id of the benchmark.
    """

    single_head = True
    router_name = "none: arg-max over one head"
    extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    after_step: Callable[[], None] | None = None

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int], n_classes: int) -> None:
        super().__init__(config, image_shape, n_classes)
        self.net = Classifier(config.backbone.build(image_shape), n_classes)
        self.active: list[int] = []  # global class of each active head unit, in the order first seen
        self.task_classes: dict[str, tuple[int, ...]] = {}  # (identifies_tasks turns False once two tasks share a class: domain-IL)
        self.per_task = config.scenario == "task-il"
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def backbone_parameters(self) -> int:
        """Parameter count of the backbone, without the head."""
        return sum(p.numel() for p in self.net.backbone.parameters())

    def _units(self) -> torch.Tensor:
        return torch.tensor(self.active)

    def active_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, len(active))`` logits of the active units, in their order."""
        return self.net(x)[:, self._units()]

    def unit_logits(self, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, len(units))`` logits of head units ``units``, computed on the
        run's device in its precision (:mod:`pearl_cl.device`), returned on the CPU as float32."""
        with device.autocast():
            out = self.net(device.to_current(x))[:, units]
        return out.float().cpu()

    def unit_targets(self, global_labels: torch.Tensor) -> torch.Tensor:
        """``(N,)`` global class ids → ``(N,)`` positions among the active units."""
        lookup = torch.full((self.net.head.out_features,), -1, dtype=torch.long)
        lookup[self._units()] = torch.arange(len(self.active))
        return lookup[global_labels]

    def train_units(self, task: TaskData) -> torch.Tensor:
        """``(K,)`` the head units a softmax over ``task``'s own images covers: the task's classes
        (``task-il``) or every active unit."""
        return torch.tensor(task.classes) if self.per_task else self._units()

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of ``(B, len(active))`` logits against ``(B,)`` active-unit positions; for
        ``task-il`` each image's logits are masked to its own task's units first (so the other
        units' logits get a zero gradient)."""
        if self.per_task:
            owner = self._owner()[self._units()].to(targets.device)  # task of each active unit
            allowed = owner[None, :] == owner[targets][:, None]
            logits = logits.masked_fill(~allowed, float("-inf"))
        return nn.functional.cross_entropy(logits, targets, reduction=reduction)

    def training_data(self, task: TaskData) -> tuple[NormalisedImages, torch.Tensor]:
        """``(N, C, H, W)`` images and ``(N,)`` global class ids to train on for ``task``."""
        return task.train_x, torch.tensor(task.classes)[task.train_y]

    def begin_task(self, task: TaskData) -> None:
        """Called before training on ``task`` (after its units are activated)."""

    def task_parameters(self) -> list[nn.Parameter] | None:
        """The parameters a task after the first trains, when not the whole network (None: the
        whole network, this default); called after :meth:`begin_task`."""
        return None

    def end_task(self, task: TaskData, x: torch.Tensor, targets: torch.Tensor) -> None:
        """Called after training on ``task`` with the images and unit targets trained on."""

    def state_numbers(self) -> int:
        """Numbers kept between tasks besides parameters (see :attr:`TaskRecord.state`)."""
        return 0

    def method_tensors(self) -> dict[str, torch.Tensor]:
        """The method's own state (Fisher, importances, …) for the task file."""
        return {}

    def restore_state(self, task: TaskData, tensors: dict[str, torch.Tensor]) -> None:
        """Set the method's own state from ``task``'s file, as :meth:`end_task` left it."""

    def _activate(self, task: TaskData) -> list[int]:
        """Activate ``task``'s classes; returns the newly activated ones."""
        new = [c for c in task.classes if c not in self.active]
        if len(new) < len(task.classes):
            self.identifies_tasks = False
        self.active += new
        self.task_classes[task.name] = task.classes
        return new

    def restore(self, task: TaskData, tensors: dict[str, torch.Tensor], record: TaskRecord) -> None:
        """Set the network and the method's state to what they were after ``task`` (tasks are
        restored in learning order, each from its own file)."""
        self._activate(task)
        self.net.load_state_dict(prefixed(tensors, "model."))
        self.restore_state(task, tensors)
        saved = prefixed(tensors, "optimizer.")
        if saved and not self.config.train.reset_optimizer:
            self.optimizer = make_optimizer(self.net.parameters(), self.config.fit_settings("train.epochs", "train.lr"))
            load_optimizer_tensors(self.optimizer, saved)
        self.records.append(record)

    def learn(self, task: TaskData, seed: int, rank_factor: int = 1) -> TaskRecord:
        """Activate ``task``'s classes and train the whole network on :meth:`training_data`.

        The first task uses ``train.reference_epochs``, later ones ``train.epochs`` (or
        ``train.iterations`` for both); the step size is ``train.lr``, or ``train.adapter_lr``
        for a later task that trains only the parameters :meth:`task_parameters` names;
        ``rank_factor`` is unused.

        Raises:
            TrainingError: the loss became NaN or infinite.
        """
        torch.manual_seed(seed)
        first = not self.records
        new = self._activate(task)
        self.begin_task(task)
        x, labels = self.training_data(task)
        targets = self.unit_targets(labels)
        own = None if first else self.task_parameters()
        if own is None:  # the whole network, one optimiser across tasks unless train.reset_optimizer
            keys = ("train.reference_epochs", "train.lr") if first else ("train.epochs", "train.lr")
            settings = self.config.fit_settings(*keys)
            if self.optimizer is None or self.config.train.reset_optimizer:
                self.optimizer = make_optimizer(self.net.parameters(), settings)
            params, optimizer = list(self.net.parameters()), self.optimizer
        else:  # new parameters for this task: a fresh optimiser at the adapter step size
            settings, params, optimizer = self.config.fit_settings("train.epochs", "train.adapter_lr"), own, None
        stats = fit(self.net, self.active_logits, params, x, targets, settings, seed,
                    desc=f"{task.name} {self.name}", extra_loss=self.extra_loss, after_step=self.after_step,
                    optimizer=optimizer, criterion=self.criterion)
        self.end_task(task, x, targets)
        counts = parameter_counts(backbone=self.backbone_parameters if first else 0,
                                  head=len(new) * (self.net.head.in_features + 1))
        record = TaskRecord(task.name, task.classes, first, {}, counts, {"probe": 0.0, "rank": 0.0, "train": stats.seconds},
                            stats.final_loss, state=self.state_numbers())
        if len(task.val_y):
            record.val_accuracy = task_accuracy(self.count_correct(task.name, task.val_x, task.val_y), len(task.val_y))
        self.records.append(record)
        return record

    def count_correct(self, task: str, x: torch.Tensor, y: torch.Tensor) -> int:
        """Task-IL: the head masked to task ``task``'s classes; ``y`` ``(N,)`` local labels."""
        units = torch.tensor(self.task_classes[task])
        return count_correct(self.net, lambda xb: self.net(xb)[:, units], x, y)

    def count_unseen(self, task: TaskData) -> int:
        """Task-IL correct predictions on ``task``'s test images through the units of its classes,
        learned or not (for forward transfer)."""
        units = torch.tensor(task.classes)
        return count_correct(self.net, lambda xb: self.net(xb)[:, units], task.test_x, task.test_y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N,)`` global classes, ``(N,)`` task indices (−1 when tasks share classes) and
        ``(N,)`` softmax confidences in [0, 1] for ``x`` ``(N, C, H, W)``: over task ``task``'s
        units (Task-IL) or over every active unit.

        Raises:
            KeyError: ``task`` was not learned (names the learned ones).
        """
        if task is not None and task not in self.task_classes:
            raise KeyError(f"task {task!r} was not learned; learned: {', '.join(self.task_classes)}")
        self.net.eval()
        units = torch.tensor(self.task_classes[task] if task is not None else self.active)
        confidence, index = torch.softmax(self.unit_logits(x, units), dim=1).max(dim=1)
        classes = units[index]
        return classes, self._owner()[classes], confidence

    def _owner(self) -> torch.Tensor:
        """Global class → index of the task it belongs to (−1 when tasks share classes)."""
        owner = torch.full((self.net.head.out_features,), -1, dtype=torch.long)
        if self.identifies_tasks:
            for t, classes in enumerate(self.task_classes.values()):
                owner[list(classes)] = t
        return owner

    @torch.no_grad()
    def route(self, x: torch.Tensor, true_task: torch.Tensor | None = None, router: str | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-/domain-IL: ``(N,)`` arg-max global class over the active units, and ``(N,)``
        the index of the task that class belongs to (−1 when tasks share classes). ``true_task``
        and ``router`` are ignored: one head needs no router."""
        self.net.eval()
        units = self._units()
        pred = torch.cat([units[self.unit_logits(x[s : s + EVAL_BATCH], units).argmax(1)] for s in range(0, len(x), EVAL_BATCH)])
        return pred, self._owner()[pred]

    def evaluate(self, tasks: list[TaskData], router: str | None = None) -> list[TaskCounts]:
        """:class:`~pearl_cl.learning.evaluation.TaskCounts` of each of ``tasks`` (the first tasks learned),
        every image afresh: the network changes with every task."""
        return evaluate_tasks(self, tasks, router)

    def task_tensors(self, task: str) -> dict[str, torch.Tensor]:
        """The whole network after task ``task`` (``model.*``: backbone and head), the method's
        own state and, unless ``train.reset_optimizer``, the optimiser's (``optimizer.*``)."""
        kept = {} if self.config.train.reset_optimizer or self.optimizer is None else optimizer_tensors(self.optimizer)
        return {**{f"model.{k}": v for k, v in self.net.state_dict().items()}, **self.method_tensors(),
                **{f"optimizer.{k}": v for k, v in kept.items()}}


class AnchoredPenalty(SingleHead):
    """The shared base of EWC and SI: after each task the weights θ* are kept as an anchor with a
    per-weight ``importance``, and later tasks add ``strength() · Σ importance·(θ − θ*)²`` to the
    loss. Subclasses compute the importance in :meth:`end_task` and name the ``strength``."""

    state_prefix = "penalty"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def strength(self) -> float:
        """The penalty's coefficient (from the method's config section)."""
        raise NotImplementedError

    def penalty(self) -> torch.Tensor:
        """``strength() · Σ importance·(θ − θ*)²``, a scalar; 0 before the first task ends."""
        return self.strength() * quadratic_penalty(self.net, self.importance, self.anchor)

    def extra_loss(self, xb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The :meth:`penalty` (the batch does not enter it)."""
        return self.penalty()

    def state_numbers(self) -> int:
        """The importance and the anchor: two numbers per parameter after the first task."""
        return sum(v.numel() for v in self.importance.values()) + sum(v.numel() for v in self.anchor.values())

    def method_tensors(self) -> dict[str, torch.Tensor]:
        """``<prefix>.importance.*`` and ``<prefix>.anchor.*`` per parameter name."""
        return {**{f"{self.state_prefix}.importance.{k}": v for k, v in self.importance.items()},
                **{f"{self.state_prefix}.anchor.{k}": v for k, v in self.anchor.items()}}

    def restore_state(self, task: TaskData, tensors: dict[str, torch.Tensor]) -> None:
        """The importance and anchor saved after ``task``."""
        self.importance = prefixed(tensors, f"{self.state_prefix}.importance.")
        self.anchor = prefixed(tensors, f"{self.state_prefix}.anchor.")
