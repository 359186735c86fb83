"""uint8 image storage normalised per batch (data/pixels.py)."""

from __future__ import annotations

import pytest
import torch

from pearl_cl.data.benchmarks import make_benchmark, normalise, split_tasks
from pearl_cl.data.pixels import NormalisedImages
from pearl_cl.registry import BENCHMARKS


def test_batches_equal_float_storage_normalised_at_once(mnist):
    spec = BENCHMARKS["split-mnist"]
    pixels = mnist.train_images[:500]
    stored, at_once = NormalisedImages(pixels, spec.mean, spec.std), normalise(pixels, spec)
    rows = torch.randperm(500, generator=torch.Generator().manual_seed(0))[:64]
    assert torch.equal(stored[rows], at_once[rows]) and stored[rows].dtype == torch.float32
    assert torch.equal(stored[10:20], at_once[10:20]) and torch.equal(stored[:], at_once)
    assert torch.equal(stored[3], at_once[3]) and torch.equal(stored[:2, 0], at_once[:2, 0])
    assert torch.equal(stored.take(rows)[:], at_once[rows])
    both = NormalisedImages.cat([stored.take(slice(0, 5)), stored.take(slice(5, 9))])
    assert torch.equal(both[:], at_once[:9]) and len(both) == 9 and both.shape == (9, 1, 28, 28)


def test_three_channels_use_their_own_mean_and_std():
    pixels = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    batch = NormalisedImages(pixels, (0.5, 0.0, 1.0), (0.5, 1.0, 2.0))[:]
    assert batch[:, 0].eq(1.0).all() and batch[:, 1].eq(1.0).all() and batch[:, 2].eq(0.0).all()


def test_tasks_keep_a_quarter_of_the_float_bytes(mnist):
    tasks = split_tasks(mnist, BENCHMARKS["split-mnist"], seed=0)
    held = sum(x.pixels.element_size() * x.numel() for t in tasks for x in (t.train_x, t.val_x, t.test_x))
    assert held == (60_000 + 10_000) * 28 * 28  # one byte per pixel; float32 took four


@pytest.mark.parametrize("pixels, mean, std", [
    (torch.zeros(2, 1, 4, 4), (0.5,), (0.5,)),
    (torch.zeros(2, 4, 4, dtype=torch.uint8), (0.5,), (0.5,)),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), (0.5,), (0.5,)),
    (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), (0.5,), (0.0,)),
])
def test_bad_storage_is_refused(pixels, mean, std):
    with pytest.raises(ValueError, match="NormalisedImages needs|one entry per channel"):
        NormalisedImages(pixels, mean, std)


def test_cat_refuses_differently_normalised_parts():
    pixels = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="different mean and std"):
        NormalisedImages.cat([NormalisedImages(pixels, (0.1,), (0.3,)), NormalisedImages(pixels, (0.2,), (0.3,))])


def test_without_standardising_pixels_are_only_scaled(mnist):
    task = make_benchmark("split-mnist", 0, test_per_task=20, standardise=False).tasks[0]
    assert torch.equal(task.test_x[:], task.test_x.pixels.float() / 255.0)
