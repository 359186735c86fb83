"""Images kept as uint8 and normalised a batch at a time (our design).

A task's images stay in memory as the ``(N, C, H, W)`` uint8 pixels the dataset holds, a quarter
of their float32 size; indexing gives the rows asked for as float32, standardised with the
benchmark's per-channel mean and std, on the run's device (:func:`pearl_cl.device.current`: the
uint8 batch is moved, then normalised there). Every reader of a task's images (training,
evaluation, router statistics, probes) indexes them in batches, so only one batch is ever float
at a time.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch

from pearl_cl import device
from pearl_cl.data.files import ImageFiles
from pearl_cl.errors import DataError


def standardise(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(N, C, H, W)`` or ``(C, H, W)`` pixels in [0, 255] (any dtype) → float32
    ``(pixels / 255 − mean) / std`` per channel; ``mean`` and ``std`` are per-channel values on
    pixels scaled to [0, 1]. The result is on ``pixels``' device."""
    shape = (-1, 1, 1)
    mean_t, std_t = (torch.tensor(v, device=pixels.device).view(shape) for v in (mean, std))
    return (pixels.float() / 255.0 - mean_t) / std_t


class NormalisedImages:
    """``(N, C, H, W)`` uint8 ``pixels`` that index as normalised float32. ``pixels`` is a tensor
    in memory, or :class:`~pearl_cl.data.files.ImageFiles` that reads them from their files.

    ``images[rows]`` (an int, slice, index tensor or boolean mask; ``images[rows, ...]`` then
    indexes the other dimensions of the result) is
    ``(pixels[rows] / 255 − mean) / std`` per channel, a float32 tensor on the current device
    (:func:`standardise`, the same numbers as normalising every image at once); ``images[:]``
    gives all rows. ``mean`` and ``std`` are per-channel tuples on pixels scaled to [0, 1].

    Raises:
        ValueError: ``pixels`` is not a 4-d uint8 tensor, or ``mean``/``std`` do not have one
            entry per channel (``std`` entries must be > 0).
    """

    def __init__(self, pixels: torch.Tensor | ImageFiles, mean: Sequence[float], std: Sequence[float]) -> None:
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise ValueError(f"NormalisedImages needs (N, C, H, W) uint8 pixels, got {tuple(pixels.shape)} {pixels.dtype}")
        channels = pixels.shape[1]
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} need one entry per channel ({channels}), std > 0")
        self.pixels = pixels
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def shape(self) -> torch.Size:
        """``(N, C, H, W)``."""
        return self.pixels.shape

    def numel(self) -> int:
        """Number of pixels held (N·C·H·W)."""
        return self.pixels.numel()

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, tuple):  # rows first, then the other dimensions of the float result
            rows = self[index[0]]
            return rows[index[1:]] if rows.dim() == 3 else rows[(slice(None),) + index[1:]]
        return standardise(device.to_current(self.pixels[index]), self.mean, self.std)

    def take(self, rows: torch.Tensor | slice) -> "NormalisedImages":
        """The ``rows`` of these images, still uint8 (no copy for a slice; image files stay unread)."""
        pixels = self.pixels.take(rows) if isinstance(self.pixels, ImageFiles) else self.pixels[rows]
        return NormalisedImages(pixels, self.mean, self.std)

    def batches(self, row_batches: Iterable[torch.Tensor], workers: int = 0) -> Iterator[torch.Tensor]:
        """``self[rows]`` for each ``rows`` of ``row_batches``, in that order. Images read from
        files are decoded by ``workers`` ``DataLoader`` processes ahead of use (0: here, when
        asked for), into pinned memory when the run is on CUDA; the batches are the same for any
        number of workers.

        Raises:
            DataError: an image cannot be read (the message a worker raised, without its traceback).
        """
        if workers == 0 or not isinstance(self.pixels, ImageFiles):
            for rows in row_batches:
                yield self[rows]
            return
        from torch.utils.data import DataLoader

        loader = DataLoader(self.pixels, batch_sampler=[rows.tolist() for rows in row_batches], num_workers=workers,
                            collate_fn=torch.stack, pin_memory=device.current().type == "cuda")
        try:
            for pixels in loader:
                yield standardise(device.to_current(pixels), self.mean, self.std)
        except DataError as exc:  # re-raised by the DataLoader with the worker's traceback: keep its last line
            last = str(exc).strip().splitlines()[-1]
            raise DataError(last.removeprefix(f"{DataError.__module__}.{DataError.__name__}: ")) from None

    @staticmethod
    def cat(parts: Sequence["NormalisedImages"]) -> "NormalisedImages":
        """``parts`` one after another (they must share mean and std).

        Raises:
            ValueError: no parts, or parts normalised differently.
        """
        if not parts:
            raise ValueError("NormalisedImages.cat needs at least one part")
        if any((p.mean, p.std) != (parts[0].mean, parts[0].std) for p in parts):
            raise ValueError("NormalisedImages.cat: the parts are normalised with different mean and std")
        if all(isinstance(p.pixels, ImageFiles) for p in parts):
            return NormalisedImages(ImageFiles.cat([p.pixels for p in parts]), parts[0].mean, parts[0].std)
        return NormalisedImages(torch.cat([p.pixels[:] for p in parts]), parts[0].mean, parts[0].std)
