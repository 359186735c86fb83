"""CIFAR-10 and CIFAR-100 from their published "python version" files.

No offline copy exists here: users bring the files, in the layout the CIFAR site publishes and
torchvision unpacks (``DIR/cifar-10-batches-py/data_batch_1`` … ``data_batch_5``, ``test_batch``;
``DIR/cifar-100-python/train``, ``test``), and pass ``--data-root DIR``; ``data.download=true``
lets torchvision fetch them into ``DIR`` first (into :data:`~pearl_cl.data.images.DOWNLOAD_ROOT`
without ``--data-root``). Each file is a pickled dict whose ``data`` is a
``(N, 3072)`` uint8 array, one row per image, the 1,024 red, then green, then blue pixels of a
32×32 image row by row; labels are under ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).

Our own reader (Krizhevsky's format description, cs.toronto.edu/~kriz/cifar.html) instead of
torchvision's dataset classes, because those refuse any file whose MD5 differs from the
published one, so they cannot read the small files in that exact format that the tests write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pearl_cl.data.images import DOWNLOAD_ROOT, ImageSet
from pearl_cl.data import unpickle
from pearl_cl.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR version lives under a root and how its files are named."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    n_classes: int
    torchvision_class: str


CIFAR10 = CifarLayout("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                      "labels", 10, "CIFAR10")
CIFAR100 = CifarLayout("cifar100", "cifar-100-python", ("train",), "test", "fine_labels", 100, "CIFAR100")


def read_cifar_file(path: Path, label_key: str, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 3, 32, 32)`` uint8 images and ``(N,)`` int64 labels of one CIFAR python-version file.

    Raises:
        DataError: the file is missing, not a pickle, or not in the CIFAR format (names the file).
    """
    try:
        with open(path, "rb") as handle:
            batch = unpickle.load(handle, encoding="bytes")
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; the CIFAR folder needs every file of the python version") from exc
    except unpickle.LOAD_ERRORS as exc:
        raise DataError(f"{path} is not a CIFAR python-version file ({exc}); download it again") from exc
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()} if isinstance(batch, dict) else {}
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path} holds no (N, 3072) uint8 'data' array; it is not a CIFAR python-version file")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if len(labels) != len(data) or (len(labels) and not (0 <= labels.min() and labels.max() < n_classes)):
        raise DataError(f"{path}: '{label_key}' must give one label in 0..{n_classes - 1} per image")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def read_cifar(root: Path, layout: CifarLayout) -> ImageSet:
    """The whole dataset from ``root / layout.folder``.

    Raises:
        DataError: a file is missing or malformed (see :func:`read_cifar_file`).
    """
    folder = root / layout.folder
    parts = [read_cifar_file(folder / f, layout.label_key, layout.n_classes) for f in layout.train_files]
    test_x, test_y = read_cifar_file(folder / layout.test_file, layout.label_key, layout.n_classes)
    return ImageSet(layout.name, torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]), test_x, test_y,
                    source=str(folder))


def _load_cifar(layout: CifarLayout, data_root: str | Path | None, download: bool) -> ImageSet:
    fetch = f"torchvision.datasets.{layout.torchvision_class}(DIR, download=True)"
    if data_root is None and not download:
        raise DataError(f"{layout.name} has no offline copy here; put the python version (folder {layout.folder}) under "
                        f"a folder DIR and pass --data-root DIR ({fetch} creates it), or add data.download=true")
    root = Path(data_root) if data_root is not None else DOWNLOAD_ROOT
    if download and not (root / layout.folder).is_dir():
        import torchvision.datasets

        try:
            getattr(torchvision.datasets, layout.torchvision_class)(str(root), train=True, download=True)
        except (RuntimeError, OSError) as exc:
            raise DataError(f"{layout.name}: download into {root} failed ({exc}); fetch it elsewhere with {fetch}") from exc
    if not (root / layout.folder).is_dir():
        raise DataError(f"{layout.name} not found: {root / layout.folder} does not exist; put the python version there "
                        f"({fetch} creates it), or add data.download=true")
    return read_cifar(root, layout)


def load_cifar10(data_root: str | Path | None = None, download: bool = False) -> ImageSet:
    """CIFAR-10, 50,000 train / 10,000 test 32×32 RGB images, classes 0–9, from ``data_root``.

    Raises:
        DataError: not found or malformed (names the folder and how to get it).
    """
    return _load_cifar(CIFAR10, data_root, download)


def load_cifar100(data_root: str | Path | None = None, download: bool = False) -> ImageSet:
    """CIFAR-100, 50,000 train / 10,000 test 32×32 RGB images, fine classes 0–99, from ``data_root``.

    Raises:
        DataError: not found or malformed (names the folder and how to get it).
    """
    return _load_cifar(CIFAR100, data_root, download)
