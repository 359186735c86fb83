"""The in-memory form every dataset source returns (our design)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

DOWNLOAD_ROOT = Path.home() / ".cache" / "pearl-cl" / "data"  # where data.download=true fetches without data.root


@dataclass(frozen=True)
class ImageSet:
    """A labelled image dataset.

    Attributes:
        name: dataset name, e.g. ``"mnist"``.
        train_images: ``(N_train, C, H, W)`` uint8 pixels: a tensor in memory, or
            :class:`~pearl_cl.data.files.ImageFiles` read from their files when used.
        train_labels: ``(N_train,)`` int64 class indices.
        test_images: ``(N_test, C, H, W)`` uint8 pixels, as ``train_images``.
        test_labels: ``(N_test,)`` int64 class indices.
        source: where the data was read from (a path), for the run's records.
        class_names: the name of each class id, when the dataset has them (an image folder's
            class folders); empty otherwise.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str
    class_names: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)
