"""``graded-mnist``: a reference task and twelve later tasks whose distance from it is graded by
construction, so the expected order of distances is known before any training (our design, for
measuring whether a proximity tracks task distance; docs/method.md).

Every task has 5 classes of 28×28 grey images and global class ids of its own (task k: ids
5k … 5k+4). Views of MNIST digits 0–4 differ from the reference only by a transform of known
strength; the other views bring new classes or new datasets:

=====  =========================  ========
task   images                      distance
=====  =========================  ========
1      MNIST 0–4 (reference)       —
2      MNIST 0–4 again (copy)      0
3      MNIST 0–4, 10% of pixels    1
       permuted
4      MNIST 0–4 rotated 30°       1
5      MNIST 5–9                   2
6      MNIST 0–4, 30% permuted     2
7      MNIST 0–4 rotated 60°       2
8      MNIST 0–4 rotated 90°       3
9      MNIST 0–4, all pixels       4
       permuted
10–11  Fashion-MNIST 0–4, 5–9      4
12–13  animal silhouettes 0–4, 5–9 4
=====  =========================  ========

The distance is an ordinal level (ties allowed): 0 the reference's own distribution; 1–3
growing transforms of the reference's images, and new digits; 4 images that share no
structure with digits (all pixels permuted, clothing, animal shapes). Within a family
(rotations, permutations) the order follows the strength; across families the levels are our
construction. Permutations and rotations are fixed (independent of the run's seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from pearl_cl.data.images import ImageSet

ROTATIONS = {"rot30": 30.0, "rot60": 60.0, "rot90": 90.0}
PERMUTED = {"perm10": 0.1, "perm30": 0.3, "perm100": 1.0}
PERMUTATION_SEED = 20_250_517  # fixed: the views are the same in every run

# (view, source dataset, source classes, distance level), in task order
VIEWS: tuple[tuple[str, str, tuple[int, ...], int], ...] = (
    ("digits0-4", "mnist", (0, 1, 2, 3, 4), 0),
    ("copy", "mnist", (0, 1, 2, 3, 4), 0),
    ("perm10", "mnist", (0, 1, 2, 3, 4), 1),
    ("rot30", "mnist", (0, 1, 2, 3, 4), 1),
    ("digits5-9", "mnist", (5, 6, 7, 8, 9), 2),
    ("perm30", "mnist", (0, 1, 2, 3, 4), 2),
    ("rot60", "mnist", (0, 1, 2, 3, 4), 2),
    ("rot90", "mnist", (0, 1, 2, 3, 4), 3),
    ("perm100", "mnist", (0, 1, 2, 3, 4), 4),
    ("fashion0-4", "fashion-mnist", (0, 1, 2, 3, 4), 4),
    ("fashion5-9", "fashion-mnist", (5, 6, 7, 8, 9), 4),
    ("animal0-4", "animal-mnist", (0, 1, 2, 3, 4), 4),
    ("animal5-9", "animal-mnist", (5, 6, 7, 8, 9), 4),
)
DISTANCES: tuple[int, ...] = tuple(level for *_, level in VIEWS[1:])
"""The constructed distance level of each task after the reference (tasks 2–13)."""


def partial_permutation(n_pixels: int, fraction: float, seed: int) -> torch.Tensor:
    """A permutation of ``range(n_pixels)`` that moves a fixed random ``fraction`` of the
    positions among themselves and leaves the rest in place."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(n_pixels, generator=generator)[: int(round(fraction * n_pixels))]
    perm = torch.arange(n_pixels)
    perm[chosen] = chosen[torch.randperm(len(chosen), generator=generator)]
    return perm


def view_images(view: str, images: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` uint8 images as seen in ``view`` (rotation or partial permutation; the
    other views are the images themselves)."""
    if view in ROTATIONS:
        from torchvision.transforms.functional import rotate

        return rotate(images, ROTATIONS[view])
    if view in PERMUTED:
        n, c, h, w = images.shape
        perm = partial_permutation(h * w, PERMUTED[view], PERMUTATION_SEED + list(PERMUTED).index(view))
        return images.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)
    return images


def load_graded(loaders: dict[str, Callable[..., ImageSet]], data_root: str | Path | None = None,
                download: bool = False) -> ImageSet:
    """The 65-class dataset of :data:`VIEWS` (task k's classes are 5k … 5k+4), from MNIST,
    Fashion-MNIST and the animal silhouettes found by ``loaders``.

    Raises:
        DataError: a source dataset cannot be found (see its loader).
    """
    sources = {name: loaders[name](data_root=data_root, download=download) for name in {v[1] for v in VIEWS}}
    parts: dict[str, list[torch.Tensor]] = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    for k, (view, dataset, classes, _) in enumerate(VIEWS):
        source = sources[dataset]
        for split in ("train", "test"):
            labels = getattr(source, f"{split}_labels")
            lookup = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
            lookup[list(classes)] = torch.arange(len(classes))
            keep = torch.nonzero(lookup[labels] >= 0).squeeze(1)
            parts[f"{split}_images"].append(view_images(view, getattr(source, f"{split}_images")[keep]))
            parts[f"{split}_labels"].append(lookup[labels[keep]] + 5 * k)
    return ImageSet(name="graded", source="; ".join(sorted({s.source for s in sources.values()})),
                    **{key: torch.cat(value) for key, value in parts.items()})
