"""Where a run computes and in which precision: ``train.device`` and ``train.precision`` (our
design; the device names are PyTorch's).

A run places its network, its per-task state (adapters, heads, EWC/SI tensors, router
statistics) and every batch on one device, chosen once with :func:`use` by the engine and read
by the code that makes tensors with :func:`current`. Everything a run keeps or writes (task
files, records, predictions, counts) is moved to the CPU first, so a run directory written on a
GPU is read on a CPU and the other way round.

``auto`` picks CUDA, then Apple's MPS, then the CPU. Under ``torchrun`` each process takes the
CUDA device of its ``LOCAL_RANK`` (one device per process). ``precision`` is ``fp32``, or
``bf16`` / ``fp16`` on CUDA: the forward pass and loss run under ``torch.autocast`` and, for
fp16, the loss is scaled by a ``torch.amp.GradScaler``; weights and optimiser state stay
float32.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator

import torch

from pearl_cl.errors import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision → autocast dtype

_current = {"device": torch.device("cpu"), "precision": "fp32"}


def available() -> list[str]:
    """The devices this process can use: ``cpu``, then ``cuda:0`` … and ``mps`` where present."""
    found = ["cpu"] + [f"cuda:{k}" for k in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def resolve(name: str) -> torch.device:
    """The device ``train.device`` = ``name`` stands for: ``auto`` (CUDA, then MPS, then CPU),
    ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. ``cuda`` (and ``auto`` on a CUDA machine) under
    ``torchrun`` is ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: an unknown name, or a device this machine lacks (names the ones it has).
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device={name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cpu":
        return torch.device("cpu")
    if str(device) not in available():
        raise ConfigError(f"train.device={name!r} is not available here; this machine has: {', '.join(available())} "
                          f"(train.device=auto picks the first of CUDA, MPS, CPU)")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`ConfigError` when ``train.precision`` = ``precision`` is unknown, or not
    fp32 on a device other than CUDA."""
    if precision not in DTYPES:
        raise ConfigError(f"unknown train.precision {precision!r}; choose one of: {', '.join(DTYPES)}")
    if precision != "fp32" and device.type != "cuda":
        raise ConfigError(f"train.precision={precision} needs a CUDA device, and this run uses {device}; "
                          f"set train.precision=fp32")


@contextmanager
def use(device: torch.device, precision: str = "fp32") -> Iterator[None]:
    """Make ``device`` and ``precision`` the :func:`current` ones inside the block.

    Raises:
        ConfigError: see :func:`check_precision`.
    """
    check_precision(precision, device)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (PyTorch's reproducibility notes)
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device
    before = dict(_current)
    _current.update(device=device, precision=precision)
    try:
        yield
    finally:
        _current.update(before)


def current() -> torch.device:
    """The device of the running run (the CPU outside :func:`use`)."""
    return _current["device"]


def precision() -> str:
    """The precision of the running run: ``fp32``, ``bf16`` or ``fp16``."""
    return _current["precision"]


def autocast() -> ContextManager:
    """``torch.autocast`` for the current device in the current precision (nothing for fp32)."""
    dtype = DTYPES[precision()]
    return nullcontext() if dtype is None else torch.autocast(current().type, dtype=dtype)


def grad_scaler() -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 (its small range needs the loss scaled), else None."""
    return torch.amp.GradScaler(current().type) if precision() == "fp16" else None


def reset_peak_memory() -> None:
    """Start counting :func:`peak_memory_bytes` afresh (nothing off CUDA)."""
    if current().type == "cuda":
        torch.cuda.reset_peak_memory_stats(current())


def peak_memory_bytes() -> int | None:
    """Most bytes of tensors held at once on the current CUDA device since
    :func:`reset_peak_memory` (``torch.cuda.max_memory_allocated``); None off CUDA."""
    return int(torch.cuda.max_memory_allocated(current())) if current().type == "cuda" else None


def to_current(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on the current device (itself when already there)."""
    return tensor.to(current(), non_blocking=True)
