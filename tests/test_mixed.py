"""Animal silhouettes (PyPI animal-mnist) and seq-mixed, the cross-dataset task sequence."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from pearl_cl.data.animal import FILES, FOLDER, load_animal_mnist, read_animal_mnist
from pearl_cl.data.benchmarks import make_benchmark
from pearl_cl.data.sources import load_fashion_mnist
from pearl_cl.errors import DataError

pytestmark = pytest.mark.slow  # trains several tasks or spawns processes; make test-fast leaves it out


@pytest.fixture(scope="module")
def animals():
    return load_animal_mnist()


def test_animal_split_drops_duplicates_and_is_fixed_stratified_and_disjoint(animals):
    assert animals.train_images.shape == (7775, 1, 28, 28) and animals.test_images.shape == (1941, 1, 28, 28)
    train_counts, test_counts = animals.train_labels.bincount(), animals.test_labels.bincount()
    assert ((train_counts + test_counts) // 5 == test_counts).all()  # every fifth image of each class
    train = {bytes(x.numpy()) for x in animals.train_images}
    assert len(train) == len(animals.train_images)
    assert not any(bytes(x.numpy()) in train for x in animals.test_images)
    assert torch.equal(load_animal_mnist().test_images, animals.test_images)  # no seed: the same split every time


def test_animal_files_under_data_root_come_first_and_bad_files_are_clear_errors(tmp_path):
    folder = tmp_path / FOLDER
    folder.mkdir()
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    images[:, 0, :10] = np.eye(10, dtype=np.uint8)  # ten distinct images
    for name, array in zip(FILES, (images, np.repeat(np.arange(2), 5))):
        with gzip.open(folder / name, "wb") as handle:
            pickle.dump(array, handle)
    found = load_animal_mnist(data_root=tmp_path)
    assert found.source == str(folder) and len(found.test_labels) == 2  # the 5th image of each class
    assert torch.equal(found.test_images[0, 0], torch.from_numpy(images[4]))
    (folder / FILES[0]).write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a gzipped pickle.*pip install --no-deps --force-reinstall animal-mnist"):
        read_animal_mnist(folder)
    with gzip.open(folder / FILES[0], "wb") as handle:
        pickle.dump(np.zeros((10, 32, 32), dtype=np.uint8), handle)
    with pytest.raises(DataError, match=r"expected \(N, 28, 28\) uint8 images"):
        read_animal_mnist(folder)


def test_seq_mixed_runs_mnist_then_fashion_then_animals(mnist, animals):
    bench = make_benchmark("seq-mixed", seed=0, train_per_task=100, test_per_task=50)
    assert len(bench.tasks) == 15 and bench.image_shape == (1, 28, 28) and bench.n_classes == 30
    assert [t.classes for t in bench.tasks[:2]] == [(0, 1), (2, 3)] and bench.tasks[14].classes == (28, 29)
    fashion = load_fashion_mnist()
    # each task's pixels come from its own dataset: compare raw pixels of the full test sets
    for task, source, label in ((bench.tasks[0], mnist, 0), (bench.tasks[5], fashion, 0), (bench.tasks[10], animals, 0)):
        raw = {bytes(x.numpy()) for x in source.test_images[source.test_labels == label]}
        mean, std = bench.spec.mean[0], bench.spec.std[0]
        pixels = (task.test_x[task.test_y == 0] * std + mean) * 255
        assert all(bytes(p.round().to(torch.uint8).numpy()) in raw for p in pixels)
