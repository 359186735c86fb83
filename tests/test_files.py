"""Images read from their files when used (data/files.py) and decoded by DataLoader workers."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from pearl_cl.data.batches import batch_rows
from pearl_cl.data.files import ImageFiles
from pearl_cl.data.pixels import NormalisedImages
from pearl_cl.errors import DataError
from pearl_cl.learning.training import FitSettings, fit

MEAN, STD = (0.1307,), (0.3081,)


@pytest.fixture
def digits(mnist, tmp_path):
    """60 real MNIST digits written as PNG files, with their pixels and labels."""
    pixels, labels = mnist.train_images[:60], mnist.train_labels[:60]
    paths = []
    for k, image in enumerate(pixels):
        path = tmp_path / f"{k:03d}.png"
        Image.fromarray(image[0].numpy()).save(path)
        paths.append(path)
    return ImageFiles(paths, 1, (28, 28)), pixels, labels


def test_files_decode_to_the_pixels_they_hold(digits):
    files, pixels, _ = digits
    rows = torch.tensor([5, 0, 59, 17])
    assert files.shape == pixels.shape and len(files) == 60 and files.dtype == torch.uint8
    assert torch.equal(files[rows], pixels[rows]) and torch.equal(files[3], pixels[3])
    assert torch.equal(files[10:13], pixels[10:13]) and files[torch.zeros(60, dtype=torch.bool)].shape == (0, 1, 28, 28)
    assert torch.equal(files.take(rows)[:], pixels[rows])
    assert torch.equal(ImageFiles.cat([files.take(slice(0, 4)), files.take(slice(50, 52))])[:],
                       torch.cat([pixels[:4], pixels[50:52]]))


def test_rgb_reading_and_resizing(digits):
    files, pixels, _ = digits
    rgb = ImageFiles(files.paths[:2], 3, (28, 28))[:]
    assert rgb.shape == (2, 3, 28, 28) and torch.equal(rgb[:, 0], rgb[:, 2]) and torch.equal(rgb[:, :1], pixels[:2])
    assert ImageFiles(files.paths[:2], 1, (14, 20), resize=True)[:].shape == (2, 1, 14, 20)
    with pytest.raises(DataError, match=r"is 28×28, not 20×14; fix it"):
        ImageFiles(files.paths[:1], 1, (14, 20), fix="fix it")[0]


def test_worker_processes_give_the_batches_of_in_memory_images(digits):
    files, pixels, _ = digits
    rows = list(batch_rows(60, 16, torch.Generator().manual_seed(3)))
    held = list(NormalisedImages(pixels, MEAN, STD).batches(rows))
    for workers in (0, 2):
        read = list(NormalisedImages(files, MEAN, STD).batches(rows, workers))
        assert len(read) == len(held) == 4 and all(torch.equal(a, b) for a, b in zip(read, held))


def test_training_on_files_with_two_workers_equals_training_in_memory(digits):
    files, pixels, labels = digits
    weights = []
    for images, workers in ((NormalisedImages(pixels, MEAN, STD), 0), (NormalisedImages(files, MEAN, STD), 2)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        fit(net, net, net.parameters(), images, labels, FitSettings(epochs=2, batch_size=16, lr=0.01, workers=workers), seed=1)
        weights.append(net[1].weight.detach().clone())
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], torch.zeros_like(weights[0]))


def test_an_unreadable_file_is_named(digits, tmp_path):
    files, _, _ = digits
    (tmp_path / "007.png").write_bytes(b"truncated")
    with pytest.raises(DataError, match="cannot read image .*007.png"):
        files[torch.arange(10)]
    with pytest.raises(DataError, match="cannot read image .*007.png"):
        files.check_headers()


def test_a_file_a_worker_cannot_read_is_one_line_naming_it(digits, tmp_path):
    files, _, _ = digits
    (tmp_path / "007.png").write_bytes(b"truncated")
    rows = list(batch_rows(60, 16, torch.Generator().manual_seed(3)))
    with pytest.raises(DataError, match="cannot read image .*007.png") as raised:
        list(NormalisedImages(files, MEAN, STD).batches(rows, workers=2))
    assert "\n" not in str(raised.value) and "Traceback" not in str(raised.value)
