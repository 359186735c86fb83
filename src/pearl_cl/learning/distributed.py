"""Data-parallel runs under ``torchrun``: N processes, PyTorch's DistributedDataParallel (our
design, on ``torch.distributed``). Each process trains on its own device (``train.device``;
on CUDA the GPU of its ``LOCAL_RANK``, :func:`pearl_cl.device.resolve`); the process group
uses NCCL for CUDA tensors and gloo for CPU tensors.

``pearl-cl run`` started by ``torchrun --nproc_per_node=N`` (which sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``) joins one process group: gloo for CPU tensors, NCCL for CUDA
tensors where CUDA exists. Every process loads the same benchmark from the same seed and holds
the whole model; what differs is which images each trains on:

* **Training** (:func:`pearl_cl.learning.training.fit`): every process draws the same seeded order of the
  task's images, so every process knows every global batch of ``train.batch_size`` images;
  process ``r`` of ``N`` trains on rows ``r, r + N, …`` of each (a last batch of fewer than
  ``2N`` images joins the one before, so every process gets at least two). Gradients are
  averaged by DistributedDataParallel, and each process's loss is its images' summed loss over
  the global batch size times ``N``, so the averaged gradient is the gradient of the global
  batch's mean loss: the step a one-process run takes, up to floating-point order and, in
  networks with BatchNorm, each process's batch statistics. We slice global batches ourselves
  rather than use ``DistributedSampler``, whose order differs from the one-process order, so
  that a run gives the same ranks and nearly the same accuracies on 1 or N processes.
* After each fit the processes agree on every parameter and buffer (:func:`sync_module`:
  BatchNorm's running statistics are averaged over processes), so they hold bitwise the same model; everything computed from it (the probe's rank
  decision, validation, router statistics, evaluation) is then the same everywhere. PEARL's
  ranks are still decided on process 0 and broadcast (:func:`broadcast_object`), so the adapters
  every process builds have the same shapes even where linear algebra differs across machines.
* Only process 0 writes the run directory (the other processes keep its manifest in memory,
  :class:`pearl_cl.engine.store.ReplicaStore`); the peak memory recorded is the largest of any process.

A failure in one process (an error, or the process killed) makes ``torchrun`` stop the others
and report which process failed and why; the failed process prints its own error first. Every
decision that changes what the processes do next (a NaN loss, the validation guard) is agreed
over all of them first, so they never wait for each other in different places.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from pearl_cl.errors import ConfigError, PearlError

ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets for each process


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return all(k in os.environ for k in ENV) and int(os.environ["WORLD_SIZE"]) > 1


def initialise() -> None:
    """Join the process group ``torchrun`` describes (gloo for CPU tensors, and NCCL for CUDA
    tensors when CUDA is available). Does nothing when not :func:`launched` or already joined.

    Raises:
        PearlError: the group cannot be joined (names torchrun's address and the fix).
    """
    if launched() and not dist.is_initialized():
        try:
            dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        except (RuntimeError, ValueError, OSError) as exc:
            raise PearlError(f"cannot join torchrun's process group at {os.environ['MASTER_ADDR']}:"
                             f"{os.environ['MASTER_PORT']} ({exc}); start every process with the same torchrun "
                             f"command, or pass a free --master_port (or --standalone on one machine)") from exc


def shutdown() -> None:
    """Leave the process group, if joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether more than one process takes part (a joined group of size > 1)."""
    return dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: 0 when not distributed."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes: 1 when not distributed."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (no-op on one process)."""
    if active():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Process 0's ``obj`` (any picklable object), on every process."""
    if not active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (every process must call this)."""
    if not active():
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def total(*values: float) -> list[float]:
    """Each of ``values`` summed over processes (every process must call this)."""
    if not active():
        return list(values)
    summed = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(summed)
    return summed.tolist()


def maximum(value: int) -> int:
    """The largest ``value`` over processes (every process must call this)."""
    if not active():
        return value
    biggest = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(biggest, op=dist.ReduceOp.MAX)
    return int(biggest.item())


def sync_module(module: nn.Module) -> None:
    """Make ``module`` the same on every process, in place: process 0's parameters (already equal
    after averaged gradients) and integer buffers, and the mean over processes of the floating
    buffers. For BatchNorm that mean is exact for the running mean (each process's running mean
    averages its halves of the same global batches) and close for the running variance (the
    spread between the processes' batch means is left out)."""
    if not active():
        return
    for parameter in module.parameters():
        dist.broadcast(parameter.data, src=0)
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer.data)
            buffer.data /= world_size()
        else:
            dist.broadcast(buffer.data, src=0)


def check_batch_size(batch_size: int) -> None:
    """Check that a global batch of ``batch_size`` (``train.batch_size``) splits evenly over the processes.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of the number of processes.
    """
    n = world_size()
    if batch_size % n:
        raise ConfigError(f"train.batch_size={batch_size} is not a multiple of the {n} processes; choose a multiple "
                          f"(e.g. {batch_size + n - batch_size % n}) so that every process trains on an equal share")


class _Step(nn.Module):
    """``module`` with ``forward`` as its forward, so DistributedDataParallel can wrap a closure."""

    def __init__(self, module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.step = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x)


def data_parallel(module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` wrapped in DistributedDataParallel over ``module`` when :func:`active`, so
    that each backward averages the gradients of ``module``'s trainable parameters over the
    processes; ``forward`` itself otherwise. Parameters a task does not use (other tasks'
    heads) are allowed (``find_unused_parameters``); buffers are not broadcast on each forward
    (each process keeps its own batch statistics until :func:`sync_module`)."""
    if not active():
        return forward
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(_Step(module, forward), find_unused_parameters=True, broadcast_buffers=False)
