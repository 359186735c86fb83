"""Mini-batches: which rows go into each, and the images of those rows (our design).

Our own few lines for images held in memory instead of ``torch.utils.data.DataLoader``: the task
data already sits in memory as one tensor, and DataLoader would index and collate it one sample
at a time, which costs more than a training step of the small networks used here. Images read
from files go through a DataLoader with worker processes
(:meth:`~pearl_cl.data.pixels.NormalisedImages.batches`), in the same order.
"""

from __future__ import annotations

from typing import Iterator

import torch

from pearl_cl.data.pixels import NormalisedImages


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


def batch_rows(n: int, batch_size: int, generator: torch.Generator, min_last: int = 1) -> Iterator[torch.Tensor]:
    """Row indices of each batch of one pass over ``n`` rows, in a random order drawn from
    ``generator``: batches of ``batch_size``, except that a last batch of fewer than ``min_last``
    rows joins the one before it."""
    order = torch.randperm(n, generator=generator)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_last:
        starts.pop()
    for k, start in enumerate(starts):
        yield order[start : starts[k + 1] if k + 1 < len(starts) else n]


def image_batches(x, row_batches: list[torch.Tensor], workers: int = 0) -> Iterator[torch.Tensor]:
    """``x[rows]`` for each ``rows`` of ``row_batches``, in order: ``x`` a tensor, or
    :class:`~pearl_cl.data.pixels.NormalisedImages` whose image files ``workers`` processes decode."""
    if isinstance(x, NormalisedImages):
        return x.batches(row_batches, workers)
    return (x[rows] for rows in row_batches)


def n_batches(n: int, batch_size: int, min_last: int = 1) -> int:
    """Number of batches :func:`iterate_batches` (or :func:`batch_rows` with ``min_last``) yields for ``n`` rows."""
    full = (n + batch_size - 1) // batch_size
    return full - 1 if full > 1 and 0 < n % batch_size < min_last else full
