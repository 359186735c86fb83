"""Per-task LoRA adapters on a frozen backbone, built on PEFT (our design on PEFT's LoRA).

Each later task gets one named PEFT LoRA adapter (``"task2"``, ``"task3"``, …) whose per-layer
ranks come from :mod:`pearl_cl.core.rank` (PEFT's ``rank_pattern``), and its own copy of every
BatchNorm (PEFT's ``modules_to_save``). A layer of rank 0 is left out of that task's
``target_modules``; a task whose ranks are all 0 still gets its own BatchNorm through PEFT's
dummy target. ``lora_alpha`` equals the rank in every layer, so PEFT's scaling α/r is 1 and the
update is exactly ``ΔW = B·A``.

Adapted layers are every ``nn.Linear`` and every ungrouped ``nn.Conv2d`` of the backbone. PEFT
cannot merge LoRA into grouped or depthwise convolutions (and needs ``r % groups == 0`` there),
so those keep the reference weights and are adapted only through their task's BatchNorm.
PEFT is imported inside the functions that use it, so that reading a config does not load it.
"""

from __future__ import annotations

import copy
import re

from typing import TYPE_CHECKING

import torch
from torch import nn

from pearl_cl.core.model import ContinualModel

if TYPE_CHECKING:
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

INITS = ("svd", "zero")


def _exact(names: list[str]) -> str:
    """A regex that PEFT full-matches against exactly these module names."""
    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


def lora_config(ranks: dict[str, int], norms: list[str], init: str) -> LoraConfig:
    r"""The PEFT config of one task.

    Args:
        ranks: layer name → rank; layers of rank 0 are left out of ``target_modules``.
        norms: BatchNorm layer names; each gets a per-task copy (``modules_to_save``).
        init: ``"svd"`` or ``"zero"``; both start from PEFT's standard init (A random, B = 0),
            which :func:`svd_initialise` then overwrites for ``"svd"``.

    PEFT looks a layer's rank up with ``re.match(rf"(.*\.)?({key})$", name)``, so a bare name
    would also match every longer name ending in it (``conv1`` in ``layer1.0.conv1``); each key
    is therefore anchored as ``^name$``.

    Raises:
        ValueError: unknown ``init``.
    """
    from peft import LoraConfig
    from peft.utils.constants import DUMMY_TARGET_MODULES

    if init not in INITS:
        raise ValueError(f"unknown adapter init {init!r}; choose one of: {', '.join(INITS)}")
    targets = [name for name, r in ranks.items() if r > 0]
    pattern = {f"^{re.escape(name)}$": ranks[name] for name in targets}
    return LoraConfig(
        r=1,
        lora_alpha=1,
        target_modules=_exact(targets) if targets else DUMMY_TARGET_MODULES,
        rank_pattern=pattern,
        alpha_pattern=pattern,
        lora_dropout=0.0,
        bias="none",
        modules_to_save=norms or None,
        init_lora_weights=True,
    )


def add_task_adapter(model: ContinualModel, task: str, ranks: dict[str, int], init: str = "svd",
                     svds: dict[str, torch.return_types.linalg_svd] | None = None) -> None:
    """Give task ``task`` its LoRA adapter with per-layer ``ranks`` and its own BatchNorm copies.

    Args:
        model: the continual model; its reference task must already be trained.
        task: the new adapter's name (``"task2"``…).
        ranks: layer name (of ``model.layer_names``) → rank ≥ 0.
        init: ``"svd"`` starts each adapter at the probe's best rank-r displacement
            (:func:`svd_initialise`, needs ``svds``); ``"zero"`` is standard LoRA (A random,
            B = 0), so the branch starts equal to the reference.
        svds: layer name → thin SVD of the probe's ΔW as a matrix (:func:`pearl_cl.core.rank.factorise`),
            for ``init="svd"``.

    The new adapter becomes the active one. On any error the half-built adapter is removed, so
    the model is as it was.

    Raises:
        ValueError: a task of that name exists, ``init="svd"`` without ``svds``, or PEFT built
            other ranks or BatchNorm copies than the ones asked for.
    """
    from peft import get_peft_model
    from peft.utils import ModulesToSaveWrapper

    if model.peft is not None and task in model.peft.peft_config:
        raise ValueError(f"task {task!r} already has an adapter")
    if init == "svd" and svds is None:
        raise ValueError("init='svd' needs the SVDs of the probe displacements (svds)")
    config = lora_config(ranks, model.norm_names, init)
    if model.peft is None:
        model.backbone = get_peft_model(model.backbone, config, adapter_name=task)
    else:
        model.peft.add_adapter(task, config)
    try:
        model.peft.set_adapter(task)
        wanted = {name: r for name, r in ranks.items() if r > 0}
        built = adapter_ranks(model, task)
        if built != wanted:
            raise ValueError(f"PEFT built ranks {built} for {task!r}, expected {wanted}")
        norms = {n for n, m in model.reference_backbone().named_modules()
                 if isinstance(m, ModulesToSaveWrapper) and task in m.modules_to_save}
        if norms != set(model.norm_names):
            raise ValueError(f"PEFT gave {task!r} BatchNorm copies {sorted(norms)}, expected {sorted(model.norm_names)}")
        if init == "svd":
            svd_initialise(model, task, {name: svds[name] for name in wanted})
    except BaseException:
        model.peft.delete_adapter(task)
        raise


def _lora_layers(model: ContinualModel) -> dict[str, LoraLayer]:
    from peft.tuners.lora import LoraLayer

    base = model.reference_backbone()
    return {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}


def adapter_ranks(model: ContinualModel, task: str) -> dict[str, int]:
    """Layer name → LoRA rank of task ``task`` (layers it does not adapt are absent)."""
    return {name: layer.r[task] for name, layer in _lora_layers(model).items() if task in layer.lora_A}


def svd_factors(svd: torch.return_types.linalg_svd, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors of the best rank-``rank`` approximation of ΔW (Eckart–Young; the SVD init of docs/method.md).

    ``svd`` is the thin SVD of ΔW as an ``(out, in·kh·kw)`` matrix (:func:`pearl_cl.core.rank.factorise`);
    returns ``B = U_r·√S_r`` of shape ``(out, rank)`` and ``A = √S_r·V_rᵀ`` of shape
    ``(rank, in·kh·kw)``, float32, so ``B·A = [ΔW]_r``.
    """
    u, s, vh = svd
    root = torch.sqrt(s[:rank])
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


@torch.no_grad()
def svd_initialise(model: ContinualModel, task: str, svds: dict[str, torch.return_types.linalg_svd]) -> None:
    """Set task ``task``'s LoRA factors so that W_ref + B·A = W_ref + [ΔW]_r in each layer.

    ``svds`` maps each adapted layer to the thin SVD of its ΔW (:func:`pearl_cl.core.rank.factorise`);
    r is the layer's rank for ``task``. B is divided by PEFT's scaling so the update is exact
    whatever ``lora_alpha`` is.

    Raises:
        KeyError: a layer of ``svds`` has no LoRA adapter for ``task``.
    """
    layers = _lora_layers(model)
    for name, svd in svds.items():
        layer = layers[name]
        rank = layer.r[task]
        b, a = svd_factors(svd, rank)
        lora_a, lora_b = layer.lora_A[task].weight, layer.lora_B[task].weight
        lora_a.copy_(a.reshape(lora_a.shape))
        lora_b.copy_((b / layer.scaling[task]).reshape(lora_b.shape))


@torch.no_grad()
def adapter_delta(model: ContinualModel, task: str, layer_name: str) -> torch.Tensor:
    """The weight update ``scaling·B·A`` of one layer, shaped like the layer's weight (detached).

    Raises:
        KeyError: ``layer_name`` has no LoRA adapter for ``task``.
    """
    layer = _lora_layers(model)[layer_name]
    a = layer.lora_A[task].weight.reshape(layer.r[task], -1)
    b = layer.lora_B[task].weight.reshape(-1, layer.r[task])
    return (layer.scaling[task] * b @ a).reshape(layer.get_base_layer().weight.shape)


def task_parameters(model: ContinualModel, task: str) -> dict[str, nn.Parameter]:
    """Every parameter that belongs to task ``task`` alone: its LoRA factors, BatchNorm and head.

    For the reference task these are all backbone parameters (W_ref) and its head.
    """
    params = {f"heads.{task}.{n}": p for n, p in model.heads[task].named_parameters()}
    if task == model.reference_task:
        params.update({f"backbone.{n}": p for n, p in model.reference_backbone().named_parameters()
                       if ".lora_" not in n and ".modules_to_save." not in n})
        return params
    marker = f".{task}."
    params.update({f"backbone.{n}": p for n, p in model.backbone.named_parameters() if marker in n})
    return params


def reference_copy(model: ContinualModel) -> nn.Module:
    """A plain copy of the backbone with the reference weights W_ref and the reference BatchNorm.

    No LoRA layers and no per-task BatchNorm copies; ``model`` is unchanged. This is the one
    source of W_ref for probes, saving and counting (the model itself holds it under PEFT).
    """
    from peft.utils import ModulesToSaveWrapper

    if model.peft is None:
        return copy.deepcopy(model.backbone)
    peft_copy = copy.deepcopy(model.peft)
    for module in peft_copy.modules():
        if isinstance(module, ModulesToSaveWrapper):
            module.set_adapter([])  # no copy active: unloading keeps the original (reference) BatchNorm
    return peft_copy.unload()


def merged_copy(model: ContinualModel, task: str) -> nn.Module:
    """A plain ``nn.Sequential(backbone, head)`` of task ``task`` with its adapter merged in.

    The result has no LoRA layers (W_ref + B·A is written into each adapted weight) and uses the
    task's BatchNorm; ``model`` itself is unchanged. Maps ``(N, C, H, W)`` → ``(N, n_classes)``.
    For speed at Task-IL inference.
    """
    head = copy.deepcopy(model.heads[task])
    if model.peft is None or task == model.reference_task:
        return nn.Sequential(reference_copy(model), head)
    peft_copy = copy.deepcopy(model.peft)
    peft_copy.set_adapter(task)
    return nn.Sequential(peft_copy.merge_and_unload(adapter_names=[task]), head)
