"""Loaders on the real offline files, torchvision's layout under data.root, and task splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pearl_cl.data import load_fashion_mnist, load_mnist, sources
from pearl_cl.data.benchmarks import make_benchmark, split_tasks
from pearl_cl.registry import BENCHMARKS
from pearl_cl.errors import ConfigError, DataError

# Class counts of the original MNIST files (LeCun et al.), train and test.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_from_package(mnist):
    assert mnist.train_images.shape == (60000, 1, 28, 28) and mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.train_images.dtype == torch.uint8 and mnist.train_labels.dtype == torch.int64
    assert torch.bincount(mnist.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test_labels).tolist() == MNIST_TEST_COUNTS
    assert int(mnist.train_images.max()) == 255 and int(mnist.train_images.min()) == 0
    assert mnist.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the original file order


def test_fashion_mnist_from_debian_package():
    if not sources.FASHION_MNIST_DEBIAN_DIR.is_dir():
        pytest.fail("Debian dataset-fashion-mnist is not installed; run `make test` (it installs it) or apt-get install it")
    fashion = load_fashion_mnist()
    assert fashion.train_images.shape == (60000, 1, 28, 28) and fashion.test_images.shape == (10000, 1, 28, 28)
    assert fashion.train_images.dtype == torch.uint8
    assert torch.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert torch.bincount(fashion.test_labels).tolist() == [1000] * 10


def _write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an uncompressed IDX file, the format torchvision reads."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_layout_under_data_root_comes_first(tmp_path, mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # a real 1,000/500-image slice of MNIST, written in torchvision's layout
    _write_idx(raw / "train-images-idx3-ubyte", mnist.train_images[:1000, 0].numpy())
    _write_idx(raw / "train-labels-idx1-ubyte", mnist.train_labels[:1000].numpy())
    _write_idx(raw / "t10k-images-idx3-ubyte", mnist.test_images[:500, 0].numpy())
    _write_idx(raw / "t10k-labels-idx1-ubyte", mnist.test_labels[:500].numpy())
    loaded = load_mnist(data_root=tmp_path)
    assert loaded.source.startswith(str(tmp_path))
    assert torch.equal(loaded.train_images, mnist.train_images[:1000])
    assert torch.equal(loaded.test_labels, mnist.test_labels[:500])


def test_empty_data_root_falls_back_to_package(tmp_path, mnist):
    assert load_mnist(data_root=tmp_path).source == mnist.source


def test_missing_dataset_names_every_way(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    with pytest.raises(DataError) as info:
        load_fashion_mnist(data_root=tmp_path)
    message = str(info.value)
    for way in ("data.root=DIR", "apt-get install -y dataset-fashion-mnist", "data.download=true"):
        assert way in message


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.gz"
    import gzip

    bad.write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(DataError, match="not a uint8 IDX"):
        sources.read_idx_gz(bad)


def test_split_mnist_tasks(mnist):
    tasks = split_tasks(mnist, BENCHMARKS["split-mnist"], seed=3)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for t in tasks:
        n_train = sum(MNIST_TRAIN_COUNTS[c] for c in t.classes)
        assert len(t.train_y) + len(t.val_y) == n_train
        assert len(t.val_y) == round(0.1 * n_train)
        assert len(t.test_y) == sum(MNIST_TEST_COUNTS[c] for c in t.classes)
        assert set(t.train_y.unique().tolist()) == {0, 1} and t.train_x.pixels.dtype == torch.uint8
    # the normalised training pixels have roughly zero mean and unit variance
    all_x = torch.cat([t.train_x[:] for t in tasks])
    assert abs(float(all_x.mean())) < 0.05 and abs(float(all_x.std()) - 1) < 0.05


def test_splits_are_seeded_and_disjoint(mnist):
    a = split_tasks(mnist, BENCHMARKS["split-mnist"], seed=1, train_per_task=300)
    b = split_tasks(mnist, BENCHMARKS["split-mnist"], seed=1, train_per_task=300)
    c = split_tasks(mnist, BENCHMARKS["split-mnist"], seed=2, train_per_task=300)
    assert torch.equal(a[0].val_x[:], b[0].val_x[:]) and not torch.equal(a[0].val_x[:], c[0].val_x[:])
    # no validation image is also a training image
    train = {tuple(row.tolist()) for row in a[0].train_x.pixels.flatten(1)}
    assert not any(tuple(row.tolist()) in train for row in a[0].val_x.pixels.flatten(1))


def test_shuffled_class_order_is_a_seeded_permutation(mnist):
    orders = [[t.classes for t in split_tasks(mnist, BENCHMARKS["split-mnist"], seed=s, shuffle_classes=True,
                                              train_per_task=50, test_per_task=10)] for s in (0, 0, 1)]
    assert orders[0] == orders[1] != orders[2]
    assert sorted(c for task in orders[0] for c in task) == list(range(10))


def test_the_van_de_ven_order_inverts_numpys_seeded_relabelling(mnist):
    spec = BENCHMARKS["split-mnist"]
    natural = [t.classes for t in split_tasks(mnist, spec, seed=0, shuffle_classes=True, train_per_task=50,
                                              test_per_task=10, order_rule="van-de-ven")]
    assert natural == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]  # their seed 0 keeps the digits in order
    relabel = np.random.RandomState(2).permutation(10)  # digit y is their label relabel[y]
    tasks = [t.classes for t in split_tasks(mnist, spec, seed=2, shuffle_classes=True, train_per_task=50,
                                            test_per_task=10, order_rule="van-de-ven")]
    for t, classes in enumerate(tasks):  # task t holds their labels 2t, 2t + 1, local labels in that order
        assert [int(relabel[y]) for y in classes] == [2 * t, 2 * t + 1]
    with pytest.raises(ConfigError, match="data.class_order"):
        split_tasks(mnist, spec, seed=2, shuffle_classes=True, order_rule="numpy")


def test_bad_split_settings(mnist):
    with pytest.raises(ConfigError, match="val_fraction"):
        split_tasks(mnist, BENCHMARKS["split-mnist"], seed=0, val_fraction=1.0)
    with pytest.raises(ConfigError, match="train_per_task"):
        split_tasks(mnist, BENCHMARKS["split-mnist"], seed=0, train_per_task=0)
    with pytest.raises(ConfigError, match="split-mnist"):
        make_benchmark("split-mnsit", seed=0)


def test_config_reads_scientific_notation_and_rejects_sections():
    from pearl_cl.config import load_config

    assert load_config(overrides=["train.lr=1e-4", "pearl.epsilon=2E-1"]).train.lr == 1e-4
    with pytest.raises(ConfigError, match="'train.lr' needs a value of type float"):
        load_config(overrides=["train.lr=fast"])


def test_permuted_mnist_tasks_share_labels_and_permute_pixels(mnist):
    from pearl_cl.data.benchmarks import shift_images

    spec = BENCHMARKS["permuted-mnist"]
    tasks = split_tasks(mnist, spec, seed=0, train_per_task=200, test_per_task=50)
    assert len(tasks) == 10 and all(t.classes == tuple(range(10)) for t in tasks)
    images = mnist.test_images[:5]
    assert torch.equal(shift_images(images, spec, 0, seed=0), images)  # task 1: original pixel order
    moved = shift_images(images, spec, 3, seed=0)
    assert not torch.equal(moved, images)
    assert torch.equal(moved.flatten(1).sort(1).values, images.flatten(1).sort(1).values)  # same pixels, new places
    assert torch.equal(moved, shift_images(images, spec, 3, seed=0))  # fixed per task and seed
    assert not torch.equal(moved, shift_images(images, spec, 3, seed=1))


def test_rotated_mnist_rotates_by_45_degrees_per_task(mnist):
    from pearl_cl.data.benchmarks import shift_images

    spec = BENCHMARKS["rotated-mnist"]
    images = mnist.test_images[:5]
    assert torch.equal(shift_images(images, spec, 2, seed=0), torch.rot90(images, 1, dims=(2, 3)))  # 90° CCW
    assert torch.equal(shift_images(images, spec, 4, seed=0), torch.rot90(images, 2, dims=(2, 3)))  # 180°
    tasks = split_tasks(mnist, spec, seed=0, train_per_task=100, test_per_task=20)
    assert len(tasks) == 5 and tasks[4].classes == tuple(range(10))
