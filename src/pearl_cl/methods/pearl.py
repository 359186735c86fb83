"""PEARL: a reference task with all weights free, then one dynamic-rank LoRA adapter per task.

Source: Bhat, Yazdani, Arani, Zonooz, "Parameter Efficient Continual Learning with Dynamic
Low-Rank Adaptation" (arXiv 2505.11998, 2025), as read from its abstract (docs/method.md says
which parts are the paper's and which are ours): train the reference task; for each later task
run a proximity probe (:mod:`pearl_cl.core.probe`), choose a rank per layer from the probe's
displacement (:mod:`pearl_cl.core.rank`), initialise the task's adapter
(:mod:`pearl_cl.core.adapters`) and train only that task's adapter, BatchNorm and head.
Task-IL inference uses the task's own branch. The first task of the sequence is the reference
task. Hyper-parameters: the ``pearl.*`` section (:class:`PearlConfig`).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pearl_cl.backbones import adaptable_layers
from pearl_cl.config import RunConfig
from pearl_cl.core.adapters import INITS, add_task_adapter, reference_copy, task_parameters
from pearl_cl.core.model import ContinualModel
from pearl_cl.core.probe import run_probe
from pearl_cl.core.rank import RANK_RULES, LayerRank, RankRule, allocate_ranks, as_matrix, budget_ranks, factorise
from pearl_cl.data.benchmarks import TaskData
from pearl_cl.learning import distributed
from pearl_cl.learning.training import FitStats, fit
from pearl_cl.errors import ConfigError
from pearl_cl.methods.branches import TaskBranches
from pearl_cl.methods.record import TaskRecord, parameter_counts, prefixed
from pearl_cl.registry import METHODS, PROBES, PROXIMITIES
from pearl_cl.routers.statistics import TaskStatistics


RULES = tuple(rule for rule in RANK_RULES if rule != "fixed")  # the rules that size ranks per task


@dataclass
class PearlConfig:
    """PEARL's probe, rank rule and adapter initialisation: ``probe`` (a registered probe) runs
    ``probe_epochs`` passes from W_ref; ``rank_rule`` (residual | energy | distance) with
    ``r_min``, ``r_max``, ``epsilon`` (residual) and ``tau`` (energy) turns its displacement into
    ranks; ``budget`` instead sizes the task's total rank from the registered ``proximity``
    measure, relative to the reference task's own, reaching ``r_max`` per layer on average at
    ``saturation``, and splits it by the measure's layer shares
    (:class:`~pearl_cl.core.rank.RankRule` documents the defaults); ``init`` is svd (from the
    probe's displacement) | zero."""

    probe: str = "finetune"
    probe_epochs: int = 1
    rank_rule: str = RankRule.name
    r_min: int = RankRule.r_min
    r_max: int = RankRule.r_max
    epsilon: float = RankRule.epsilon
    tau: float = RankRule.tau
    proximity: str = "linear-probe"
    saturation: float = RankRule.saturation
    init: str = "svd"

    def to_rank_rule(self) -> RankRule:
        """The validated :class:`~pearl_cl.core.rank.RankRule` these knobs describe.

        Raises:
            ConfigError: unknown rule or bounds out of range (names the ``pearl.*`` key).
        """
        if self.rank_rule not in RULES:
            hint = " (one rank for every layer is --method lora --set lora.rank=K)" if self.rank_rule in RANK_RULES else ""
            raise ConfigError(f"unknown rank rule {self.rank_rule!r} (pearl.rank_rule); choose one of: {', '.join(RULES)}{hint}")
        try:
            return RankRule(self.rank_rule, self.r_min, self.r_max, self.epsilon, self.tau, saturation=self.saturation)
        except ConfigError as exc:
            raise ConfigError(re.sub(r"\b(r_min|r_max|epsilon|tau|saturation)\b", r"pearl.\1", str(exc))) from exc

    def check(self, config: RunConfig) -> None:
        """Raise :class:`ConfigError` naming the first ``pearl.*`` key out of range."""
        PROBES.get(self.probe)
        PROXIMITIES.get(self.proximity)
        if self.init not in INITS:
            raise ConfigError(f"unknown pearl.init {self.init!r}; choose one of: {', '.join(INITS)}")
        self.to_rank_rule()
        config.fit_settings("pearl.probe_epochs", "train.lr")


def _count(params: dict[str, torch.nn.Parameter], marker: str) -> int:
    return sum(p.numel() for name, p in params.items() if marker in name)


def _parameter_counts(params: dict[str, torch.nn.Parameter]) -> dict[str, int]:
    """Split the names of :func:`~pearl_cl.core.adapters.task_parameters` into the TaskRecord keys."""
    adapter, norm, head = _count(params, ".lora_"), _count(params, ".modules_to_save."), _count(params, "heads.")
    backbone = sum(p.numel() for p in params.values()) - adapter - norm - head
    return parameter_counts(backbone, adapter, norm, head)


@METHODS.register("pearl", default=True)
class Pearl(TaskBranches):
    """The PEARL learner: ``learn(task, seed)`` one task at a time, then evaluate any task seen
    (the :class:`~pearl_cl.methods.learner.Learner` contract).

    Args:
        config: the run config (``backbone``, ``train``, ``pearl`` sections are used).
        image_shape: ``(C, H, W)`` of the benchmark's images.
        n_classes: number of classes in the benchmark (unused: every task has its own head).

    Raises:
        ConfigError: invalid rank-rule knobs or backbone.
    """

    config_section = PearlConfig
    has_ranks = True  # a failed task can be retried with larger ranks
    chooses_ranks = True
    marker, marker_size = "*", 14
    order = 80

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int], n_classes: int = 0) -> None:
        super().__init__(config, image_shape, n_classes)
        self.rule = self.rank_rule(config)
        self.baseline = 0.0  # the budget rule's proximity of the reference task to itself
        self.model = ContinualModel(config.backbone.build(image_shape))

    @staticmethod
    def rank_rule(config: RunConfig) -> RankRule:
        """The rank rule the ``pearl`` knobs describe (the fixed-rank LoRA baseline overrides it)."""
        return config.pearl.to_rank_rule()

    @property
    def backbone_parameters(self) -> int:
        """Parameter count of the backbone (W_ref), without heads or adapters."""
        return _parameter_counts(task_parameters(self.model, self.model.reference_task))["backbone"]

    def learn(self, task: TaskData, seed: int, rank_factor: int = 1) -> TaskRecord:
        """Learn ``task``; the first task learned is the reference task. Returns its record.

        ``rank_factor`` > 1 multiplies every rank the rule chose (a layer of rank 0 gets rank 1),
        within the layer's shape: the retry of a task that failed its validation guard.

        Raises:
            TrainingError: the loss became NaN or infinite. The failed task's adapter and head
                stay in the model; the runner rebuilds the learner from the run directory
                (:mod:`pearl_cl.engine.restore`), which holds the earlier tasks unchanged.
        """
        torch.manual_seed(seed)
        if not self.records:
            record = self._learn_reference(task, seed)
        else:
            record = self._learn_adapter(task, seed, rank_factor)
        return self.finish_task(task, record)

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
        self._measure_baseline(task, seed)
        return TaskRecord(task.name, task.classes, True, {}, _parameter_counts(params),
                          {"probe": 0.0, "rank": 0.0, "train": stats.seconds}, stats.final_loss)

    def _probe_settings(self):
        return self.config.fit_settings("pearl.probe_epochs", "train.lr", iterations=False)

    def _measure_baseline(self, task: TaskData, seed: int) -> None:
        """The budget rule's baseline: the proximity measure on the reference task itself,
        subtracted from every later task's. It is measured on the reference task's validation
        images (its training images when it has fewer than 20): the reference weights were
        trained on its training images, whose features are therefore closer than any new
        images of the same distribution. Not measured for a task without images (a benchmark
        restored from a run's ``data.json`` for predict or export, which learns nothing)."""
        if self.rule.name == "budget" and len(task.train_y):
            measure = PROXIMITIES.get(self.config.pearl.proximity)
            unseen = task if len(task.val_y) < 20 else dataclasses.replace(task, train_x=task.val_x, train_y=task.val_y)
            self.baseline = measure(reference_copy(self.model), unseen, self._probe_settings(), seed).task

    def _choose_ranks(self, task: TaskData, reference: torch.nn.Module, seed: int) -> tuple[dict[str, LayerRank], dict | None]:
        """The rank of every layer for ``task`` and, for ``init=svd``, the SVDs of the probe's
        displacement (which the residual and energy rules also read)."""
        cfg = self.config.pearl
        needs_probe = self.rule.name != "budget" or cfg.init == "svd"
        deltas = run_probe(cfg.probe, reference, task, self._probe_settings(), seed) if needs_probe else None
        svds = {name: factorise(delta) for name, delta in deltas.items()} if cfg.init == "svd" else None
        weights = {name: m.weight.detach() for name, m in adaptable_layers(reference).items()}
        if self.rule.name == "budget":
            measured = PROXIMITIES.get(cfg.proximity)(reference, task, self._probe_settings(), seed)
            shapes = {name: tuple(as_matrix(w).shape) for name, w in weights.items()}
            return budget_ranks(max(0.0, measured.task - self.baseline), measured.layers, shapes, self.rule), svds
        spectra = {name: svd.S for name, svd in svds.items()} if svds else None  # one SVD serves rule and init
        return allocate_ranks(deltas, weights, self.rule, spectra), svds

    def _learn_adapter(self, task: TaskData, seed: int, rank_factor: int) -> TaskRecord:
        cfg = self.config.pearl
        start = time.perf_counter()
        reference = reference_copy(self.model)
        ranks, svds = self._choose_ranks(task, reference, seed)
        probed = time.perf_counter()
        ranks = distributed.broadcast_object(ranks)  # one decision for all processes
        if rank_factor > 1:
            ranks = {n: LayerRank(n, r.shape, r.proximity, min(max(r.rank * rank_factor, 1), *r.shape)) for n, r in ranks.items()}
        add_task_adapter(self.model, task.name, {name: r.rank for name, r in ranks.items()}, cfg.init, svds)
        self.model.add_head(task.name, len(task.classes))
        ranked = time.perf_counter()  # the rank step: rule, SVD initialisation, adapter and head
        params, stats = self._fit(task, "train.epochs", "train.adapter_lr", seed, "adapter")
        return TaskRecord(task.name, task.classes, False, ranks, _parameter_counts(params),
                          {"probe": probed - start, "rank": ranked - probed, "train": stats.seconds}, stats.final_loss)

    def restore(self, task: TaskData, tensors: dict[str, torch.Tensor], record: TaskRecord) -> None:
        """Rebuild ``task``'s branch from its saved tensors (:meth:`task_tensors`) and record,
        exactly as learning left it; tasks are restored in learning order.

        Raises:
            KeyError, RuntimeError: the tensors do not fit the branch (a file from another run).
        """
        from peft import set_peft_model_state_dict

        self.model.add_head(task.name, len(task.classes)).load_state_dict(prefixed(tensors, "head."))
        if record.reference:
            self.model.reference_task = task.name
            self.model.backbone.load_state_dict(prefixed(tensors, "backbone."))
            self.model.backbone.requires_grad_(False)
            self._measure_baseline(task, self.config.seed * 1000 + task.index)
        else:
            add_task_adapter(self.model, task.name, {name: r.rank for name, r in record.ranks.items()}, "zero")
            saved = prefixed(tensors, "adapter.")
            result = set_peft_model_state_dict(self.model.peft, saved, adapter_name=task.name)
            missing = [k for k in result.missing_keys if f".{task.name}." in k]
            if result.unexpected_keys or missing:
                raise KeyError(f"{task.name}: the saved adapter does not fit (unexpected {result.unexpected_keys[:3]}, "
                               f"missing {missing[:3]})")
        self.statistics[task.name] = TaskStatistics.from_tensors(tensors)
        self.records.append(record)

    def task_tensors(self, task: str) -> dict[str, torch.Tensor]:
        """Every tensor that belongs to task ``task``, for its safetensors file.

        The reference task's file holds the whole backbone (``backbone.*``, W_ref with the
        reference BatchNorm); a later task's holds its PEFT adapter state (``adapter.*``: LoRA
        factors, BatchNorm parameters and statistics). Both hold the task's head (``head.*``) and its
        router statistics (``router.*``, see :class:`~pearl_cl.routers.statistics.TaskStatistics`).
        """
        from peft import get_peft_model_state_dict

        own = {f"head.{k}": v for k, v in self.model.heads[task].state_dict().items()}
        own.update(self.statistics[task].to_tensors())
        if task == self.model.reference_task:
            return {**{f"backbone.{k}": v for k, v in reference_copy(self.model).state_dict().items()}, **own}
        adapter = get_peft_model_state_dict(self.model.peft, adapter_name=task)
        return {**{f"adapter.{k}": v for k, v in adapter.items()}, **own}

    def export_adapter(self, task: str, directory: Path) -> dict[str, Any]:
        """Write task ``task``'s PEFT adapter (``adapter_config.json``,
        ``adapter_model.safetensors``: LoRA factors and BatchNorm copies), the reference weights
        (``backbone.safetensors``) and the task's head (``head.safetensors``) into ``directory``;
        returns how to load them."""
        self.model.peft.save_pretrained(directory / "peft", selected_adapters=[task])
        for file in (directory / "peft" / task).iterdir():
            file.rename(directory / file.name)
        shutil.rmtree(directory / "peft")
        save_file({k: v.contiguous().cpu() for k, v in reference_copy(self.model).state_dict().items()},
                  str(directory / "backbone.safetensors"))
        save_file({k: v.contiguous().cpu() for k, v in self.model.heads[task].state_dict().items()},
                  str(directory / "head.safetensors"))
        return {"adapter_name": task,
                "load": "PeftModel.from_pretrained(build_backbone(name, image_shape, width) with backbone.safetensors "
                        "loaded, DIR, adapter_name=task); logits = head(features)"}
