"""CIFAR loaders on small files written in exactly the published python-version format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from pearl_cl.config import load_config
from pearl_cl.data.benchmarks import make_benchmark
from pearl_cl.data.cifar import CIFAR10, CIFAR100, read_cifar
from pearl_cl.errors import DataError
from pearl_cl.engine.runner import run


def _write_batch(path, n: int, n_classes: int, label_key: bytes, seed: int) -> tuple[np.ndarray, list[int]]:
    """A CIFAR python-version file: a pickled dict with bytes keys, data (n, 3072) uint8."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(i % n_classes) for i in range(seed, seed + n)]
    batch = {b"batch_label": b"synthetic", label_key: labels, b"data": data,
             b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [c // 5 for c in labels]
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return data, labels


def _cifar10(root, per_file: int = 40):
    folder = root / CIFAR10.folder
    folder.mkdir(parents=True)
    files = {name: _write_batch(folder / name, per_file, 10, b"labels", seed)
             for seed, name in enumerate([*CIFAR10.train_files, CIFAR10.test_file])}
    return files


def test_cifar10_pixels_and_labels_read_in_the_published_layout(tmp_path):
    files = _cifar10(tmp_path)
    images = read_cifar(tmp_path, CIFAR10)
    assert images.train_images.shape == (200, 3, 32, 32) and images.test_images.shape == (40, 3, 32, 32)
    data, labels = files["data_batch_2"]
    row = 7  # image 7 of batch 2: channel c, pixel (r, k) is data[row, 1024 c + 32 r + k]
    got = images.train_images[40 + row]
    assert got[0, 0, 0] == data[row, 0] and got[1, 3, 5] == data[row, 1024 + 32 * 3 + 5]
    assert got[2, 31, 31] == data[row, 3071]
    assert images.train_labels[40 + row] == labels[row]
    assert torch.equal(images.test_labels, torch.tensor(files["test_batch"][1]))


def test_cifar100_uses_fine_labels_and_splits_both_ways(tmp_path):
    folder = tmp_path / CIFAR100.folder
    folder.mkdir()
    _write_batch(folder / "train", 400, 100, b"fine_labels", 0)
    _write_batch(folder / "test", 200, 100, b"fine_labels", 1)
    for name, n_tasks, per_task in (("split-cifar100-10x10", 10, 10), ("split-cifar100-5x20", 5, 20)):
        bench = make_benchmark(name, seed=0, data_root=tmp_path)
        assert len(bench.tasks) == n_tasks and bench.image_shape == (3, 32, 32)
        assert all(len(t.classes) == per_task for t in bench.tasks)
        assert sorted(c for t in bench.tasks for c in t.classes) == list(range(100))
        assert all(len(t.train_y) + len(t.val_y) == 4 * per_task for t in bench.tasks)  # 4 images per class


def test_missing_or_malformed_cifar_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="--data-root"):
        make_benchmark("split-cifar10", seed=0)
    with pytest.raises(DataError, match="cifar-10-batches-py does not exist"):
        make_benchmark("split-cifar10", seed=0, data_root=tmp_path)
    _cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR python-version file"):
        make_benchmark("split-cifar10", seed=0, data_root=tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(DataError, match="no \\(N, 3072\\) uint8"):
        make_benchmark("split-cifar10", seed=0, data_root=tmp_path)
    _write_batch(tmp_path / "cifar-10-batches-py" / "data_batch_3", 40, 10, b"labels", 3)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 is missing"):
        make_benchmark("split-cifar10", seed=0, data_root=tmp_path)


@pytest.mark.slow
def test_pearl_runs_split_cifar10_from_the_files(tmp_path):
    _cifar10(tmp_path / "data", per_file=60)
    result = run(load_config(benchmark="split-cifar10", out=str(tmp_path / "run"), data__root=str(tmp_path / "data"),
                             backbone__width=0.25, train__batch_size=16, pearl__probe="gradient",
                             train__augment="crop_flip"))
    assert result.metrics["status"] == "complete" and len(result.records) == 5
    assert result.metrics["data_source"].endswith("cifar-10-batches-py")
    assert all(r.ranks for r in result.records[1:])  # every later task got a rank decision per layer
