"""Batched crop-and-flip augmentation: every image its own crop and flip, and nothing else."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from pearl_cl.config import load_config
from pearl_cl.data.augment import crop_flip
from pearl_cl.errors import ConfigError


def test_each_image_is_a_padded_crop_of_itself_possibly_mirrored():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    out = crop_flip(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    seen = set()
    for i in range(len(x)):
        matches = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, top : top + 32, left : left + 32]))]
        assert matches, f"image {i} is not a crop of its padded self"
        seen.add(matches[0])
    assert len(seen) > 8  # images get their own offsets and flips, not one per batch


def test_same_generator_seed_same_augmentation():
    x = torch.randn(8, 3, 32, 32)
    a = crop_flip(x, torch.Generator().manual_seed(3))
    b = crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, crop_flip(x, torch.Generator().manual_seed(4)))


def test_unknown_augmentation_is_a_config_error():
    config = load_config(None, ["train.augment=rotate"])
    with pytest.raises(ConfigError, match="train.augment"):
        config.fit_settings("train.epochs", "train.lr")
