"""Training-time augmentation on image tensors, in batches: random crop after padding and random
horizontal flip (the standard CIFAR recipe of He et al., "Deep Residual Learning", 2016: pad 4,
crop 32×32, flip with probability 1/2).

Our own few lines: torchvision's ``transforms.v2.RandomCrop`` and ``RandomHorizontalFlip`` draw
one set of parameters per call, so on a batch every image would get the same crop and flip; here
every image gets its own, drawn from the caller's generator (so a seeded run stays reproducible).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

AUGMENTATIONS = ("none", "crop_flip")
PADDING = 4  # pixels on each side before the random crop


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = PADDING) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(N, C, H, W)``: each image padded by ``padding`` pixels of 0 (the mean,
    on standardised images), cropped back to ``H × W`` at a random offset, and mirrored left-right
    with probability 1/2; offsets and flips are drawn from ``generator`` (a CPU generator, so the
    draws are the same whatever device ``x`` is on)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (top[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = left[:, None] + torch.arange(w)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # (N, 1, 1, W)
    index = (torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols)
    return padded[tuple(i.to(x.device) for i in index)]
