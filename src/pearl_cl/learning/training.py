"""Fit one task: the loop, the optimiser, epochs, progress bar and a NaN guard (our design)."""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from pearl_cl import device
from pearl_cl.learning import distributed
from pearl_cl.data.augment import AUGMENTATIONS, crop_flip
from pearl_cl.data.batches import batch_rows, image_batches, iterate_batches, n_batches
from pearl_cl.errors import ConfigError, TrainingError

OPTIMIZERS = ("adam", "sgd")
EVAL_BATCH = 128  # images per forward pass when evaluating: count_correct on 2,048 images, 2 CPU cores,
# ran 1.3x faster at 128 than at 512 on the reduced ResNet-18 (smaller activations stay in cache)
# and 0.7x on the MLP, whose evaluation takes milliseconds either way


@dataclass(frozen=True)
class FitSettings:
    """How to fit: ``epochs`` passes over the data in batches of ``batch_size``, or exactly
    ``iterations`` optimiser steps when that is set (passes repeat, each in a new random order;
    the Split-MNIST protocol of the literature counts steps); ``lr`` is the step size;
    ``optimizer`` is adam | sgd (with ``momentum``); ``weight_decay`` is L2; ``augment`` is none |
    crop_flip (:mod:`pearl_cl.data.augment`, each training batch); ``workers`` decode images read
    from files (``data.workers``). ``names`` are the config keys of ``epochs`` and ``lr``, used
    in error messages.

    Raises:
        ConfigError: a value out of range (names the config key).
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    names: tuple[str, str] = ("epochs", "lr")
    iterations: int | None = None
    augment: str = "none"
    workers: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r} (train.optimizer); choose one of: {', '.join(OPTIMIZERS)}")
        if self.epochs < 1:
            raise ConfigError(f"{self.names[0]} must be >= 1, got {self.epochs}")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"train.iterations must be >= 1 or null (count epochs), got {self.iterations}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"{self.names[1]} must be finite and > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"train.weight_decay must be finite and >= 0, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"train.momentum must be in [0, 1), got {self.momentum}")
        if self.augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown augmentation {self.augment!r} (train.augment); choose one of: {', '.join(AUGMENTATIONS)}")


@dataclass(frozen=True)
class FitStats:
    """What a fit did: wall ``seconds`` and ``final_loss``, the mean loss of the last pass over
    the data (the last, possibly partial, pass when counting iterations)."""

    seconds: float
    final_loss: float


@dataclass(frozen=True)
class StepEvent:
    """One optimiser step of a fit, as observers of :func:`observe_steps` see it: ``phase`` the
    fit's name (its progress-bar text, e.g. ``task2 adapter``), ``epoch`` (1-based), ``step``
    (1-based, within the fit), ``loss`` (the step's batch loss), ``lr`` (the step size of the
    first parameter group) and ``seconds`` since the fit started."""

    phase: str
    epoch: int
    step: int
    loss: float
    lr: float
    seconds: float


_OBSERVERS: list[Callable[[StepEvent], None]] = []


@contextmanager
def observe_steps(observer: Callable[[StepEvent], None]) -> Iterator[None]:
    """Call ``observer(event)`` after every optimiser step of every :func:`fit` inside the block
    (how the engine's loggers see training without the methods knowing of them)."""
    _OBSERVERS.append(observer)
    try:
        yield
    finally:
        _OBSERVERS.remove(observer)


def _no_progress_bar() -> bool | None:
    """tqdm's ``disable``: True off process 0 and where ``TQDM_DISABLE`` is set (the workers of
    ``compare --jobs``), else None (a bar only on a terminal)."""
    return True if not distributed.is_main() or os.environ.get("TQDM_DISABLE") else None


def make_optimizer(params: Iterable[nn.Parameter], settings: FitSettings) -> torch.optim.Optimizer:
    """The optimiser named by ``settings`` over ``params``."""
    params = list(params)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


def fit(
    module: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    params: Iterable[nn.Parameter],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: FitSettings,
    seed: int,
    desc: str = "train",
    extra_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    criterion: Callable[..., torch.Tensor] | None = None,
) -> FitStats:
    """Minimise cross-entropy of ``forward(x)`` against ``y`` over ``params`` only.

    ``module`` is put in train mode; ``forward`` maps ``(B, C, H, W)`` to ``(B, K)`` logits;
    ``y`` holds labels in ``[0, K)``. Batches are shuffled with a generator seeded by ``seed``.
    ``extra_loss(xb, logits)``, when given, is added to the cross-entropy of each batch (a
    regulariser or distillation term, see :mod:`pearl_cl.methods`); ``after_step()`` is called
    after each optimiser step, with the step's gradients still in place. ``optimizer``, when
    given, is used as it is (its state carried over from an earlier fit; ``params`` is then
    ignored), else a fresh one is made from ``settings``. ``criterion(logits, yb, reduction=...)``
    replaces the cross-entropy (e.g. one that masks each image's logits to its task's units).

    ``x[rows]`` gives the batch on the run's device (:mod:`pearl_cl.device`), where ``module`` is
    moved too; labels are moved there a batch at a time. The forward pass and the loss run under
    the run's autocast precision; with fp16 the loss is scaled (``torch.amp.GradScaler``).

    Under ``torchrun`` with N processes (:mod:`pearl_cl.learning.distributed`) every process draws the
    same global batches, trains on its N-th of each with gradients averaged by
    DistributedDataParallel, and ends with the same model on every process (process 0's
    parameters, BatchNorm statistics averaged over processes); the returned loss is over all
    processes' images.

    Raises:
        TrainingError: the loss became NaN or infinite on any process (names the step and the fix).
        ConfigError: ``settings.batch_size`` is not a multiple of the number of processes.
    """
    if len(y) == 0:
        raise TrainingError(f"{desc}: no training images; check the benchmark's task split")
    processes = distributed.world_size()
    distributed.check_batch_size(settings.batch_size)
    module.to(device.current())
    optimizer = optimizer or make_optimizer(params, settings)
    criterion = criterion or nn.functional.cross_entropy
    scaler = device.grad_scaler()
    generator = torch.Generator().manual_seed(seed)
    step_forward = distributed.data_parallel(module, forward)
    min_last = 2 * processes if processes > 1 else 1  # at least two images per process in every batch
    module.train()
    start = time.perf_counter()
    per_pass = n_batches(len(y), settings.batch_size, min_last)
    total = settings.iterations or settings.epochs * per_pass
    steps, last_loss, epoch = 0, math.nan, 0
    with tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=_no_progress_bar()) as bar:
        while steps < total:
            epoch += 1
            loss_sum, count = 0.0, 0.0
            row_batches = list(batch_rows(len(y), settings.batch_size, generator, min_last))
            for rows, xb in zip(row_batches, image_batches(x, row_batches, settings.workers)):
                yb = device.to_current(y[rows])
                if settings.augment == "crop_flip":
                    xb = crop_flip(xb, generator)  # the whole global batch, so every process draws alike
                if processes > 1:
                    xb, yb = xb[distributed.rank() :: processes], yb[distributed.rank() :: processes]
                with device.autocast():
                    logits = step_forward(xb)
                    if processes == 1:
                        loss = criterion(logits, yb)
                    else:  # averaged over processes, the global batch's mean loss (pearl_cl.learning.distributed)
                        loss = criterion(logits, yb, reduction="sum") * (processes / len(rows))
                    if extra_loss is not None:
                        loss = loss + extra_loss(xb, logits)
                finite = bool(torch.isfinite(loss))
                if distributed.any_process(not finite):
                    what = f"loss became {loss.item()}" if not finite else "loss became NaN or infinite in another process"
                    raise TrainingError(f"{desc}: {what} at epoch {epoch}, step {steps + 1}; "
                                        f"lower {settings.names[1]} (now {settings.lr})")
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                if after_step is not None:
                    after_step()
                steps += 1
                weight = len(rows) / processes  # this process's share of the global batch's loss
                step_loss = loss.item()
                loss_sum += step_loss * weight
                count += weight
                bar.update(1)
                if _OBSERVERS:
                    event = StepEvent(desc, epoch, steps, step_loss, optimizer.param_groups[0]["lr"], time.perf_counter() - start)
                    for observer in list(_OBSERVERS):
                        observer(event)
                if steps % 20 == 0:
                    bar.set_postfix(epoch=epoch, loss=f"{loss_sum / count:.4f}")
                if steps == total:
                    break
            loss_sum, count = distributed.total(loss_sum, count)
            last_loss = loss_sum / count
    distributed.sync_module(module)
    return FitStats(seconds=time.perf_counter() - start, final_loss=last_loss)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The per-parameter state of ``optimizer`` (Adam's ``step``, ``exp_avg``, ``exp_avg_sq``;
    SGD's ``momentum_buffer``) as ``{"<index>.<name>": tensor}``, for a safetensors file."""
    return {f"{index}.{name}": value.detach().clone() for index, state in optimizer.state_dict()["state"].items()
            for name, value in state.items() if torch.is_tensor(value)}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Set ``optimizer``'s per-parameter state from :func:`optimizer_tensors`' output.

    Raises:
        ValueError: ``tensors`` name a parameter index the optimiser does not have.
    """
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    if not set(state) <= set(current["param_groups"][0]["params"]):
        raise ValueError(f"optimizer state for {len(state)} parameters does not fit this optimizer")
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


@torch.no_grad()
def count_correct(module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  batch_size: int = EVAL_BATCH) -> int:
    """Number of rows of ``x`` ``(N, C, H, W)`` whose argmax logit equals ``y`` ``(N,)``; eval
    mode, on the run's device and in its precision."""
    module.eval().to(device.current())
    correct = 0
    for xb, yb in iterate_batches(x, y, batch_size):
        with device.autocast():
            predicted = forward(xb).argmax(1)
        correct += int((predicted.cpu() == yb).sum())
    return correct
