"""Mini-batches over in-memory tensors (our design).

Our own few lines instead of ``torch.utils.data.DataLoader``: the task data already sits in
memory as one tensor, and DataLoader would index and collate it one sample at a time, which
costs more than a training step of the small networks used here.
"""

from __future__ import annotations

from typing import Iterator

import torch


def iterate_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x[i], y[i])`` batches of at most ``batch_size`` rows.

    With ``generator`` the rows are visited in a random order drawn from it (training);
    without, in order (evaluation). ``x`` is ``(N, ...)``, ``y`` is ``(N,)``.
    """
    if generator is None:
        for start in range(0, len(y), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
    else:
        for rows in batch_rows(len(y), batch_size, generator):
            yield x[rows], y[rows]


def batch_rows(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Row indices ``(≤ batch_size,)`` of each batch of one pass over ``n`` rows, in a random
    order drawn from ``generator``."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def n_batches(n: int, batch_size: int) -> int:
    """Number of batches :func:`iterate_batches` yields for ``n`` rows."""
    return (n + batch_size - 1) // batch_size
