"""Predict the class of image files with a saved run (our design; ``pearl-cl predict``).

Images are read as they are, never resized or converted: PNG and JPEG through Pillow, ``.npy``
arrays (``(H, W)``, ``(C, H, W)`` or ``(H, W, C)``; uint8 in 0–255 or floats in
[0, 1]). An image whose channels or size differ from the benchmark's is an error that says what
the run expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pearl_cl.data.benchmarks import normalise
from pearl_cl.data.files import opened_image
from pearl_cl.errors import DataError, PearlError
from pearl_cl.engine.restore import load_learner, open_run
from pearl_cl.engine.runner import run_benchmark

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")


def read_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """The image at ``path`` as a float32 ``(C, H, W)`` tensor of pixels in [0, 255].

    Raises:
        DataError: unreadable file, unknown format, wrong channels or size (names the file, what
            the run expects, and how to fix it).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unknown image format {suffix or '(no suffix)'!r}; give PNG, JPEG or .npy files")
    if suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only, until the size is checked
        except (OSError, ValueError, EOFError, MemoryError) as exc:
            raise DataError(f"{path}: cannot use the image: not a whole .npy array ({exc}); save one image with "
                            f"numpy.save") from exc
        try:
            if array.size > 4 * shape[1] * shape[2]:
                raise ValueError(f"it holds an array of shape {array.shape}, larger than one image of this run "
                                 f"({shape[1]}x{shape[2]}, up to 4 channels)")
            image = _from_array(np.array(array))
        except ValueError as exc:
            raise DataError(f"{path}: cannot use the image: {exc}") from exc
    else:
        with opened_image(path, "give a PNG or JPEG of the benchmark's size, or a .npy array") as opened:
            if opened.mode not in ("L", "RGB", "RGBA"):
                raise DataError(f"{path}: cannot use the image: its mode is {opened.mode}; save it as 8-bit "
                                f"grayscale (L) or RGB")
            image = _from_array(np.asarray(opened))
    c, h, w = shape
    if image.shape[0] != c:
        kind = "grayscale" if c == 1 else f"{c}-channel"
        raise DataError(f"{path} has {image.shape[0]} channel(s); this run's benchmark takes {kind} {h}x{w} images: "
                        f"convert it (e.g. PIL's Image.convert('L') for grayscale)")
    if tuple(image.shape[1:]) != (h, w):
        raise DataError(f"{path} is {image.shape[2]}x{image.shape[1]} pixels; this run's benchmark takes {w}x{h}: "
                        f"resize it first")
    return image


def _from_array(array: np.ndarray) -> torch.Tensor:
    """An image array ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` → ``(C, H, W)`` float pixels in
    [0, 255] (uint8 kept as is, floats in [0, 1] scaled)."""
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[0] not in (1, 3, 4) and array.shape[-1] in (1, 3, 4):
        array = np.moveaxis(array, -1, 0)
    if array.ndim != 3:
        raise ValueError(f"array of shape {array.shape}; give (H, W), (C, H, W) or (H, W, C)")
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32))
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"pixels of dtype {array.dtype}; give uint8 in 0-255 or floats in [0, 1]")
    if array.size and not (0.0 <= array.min() and array.max() <= 1.0):
        raise ValueError("float pixels outside [0, 1]; give uint8 in 0-255 or floats in [0, 1]")
    return torch.from_numpy(array.astype(np.float32) * 255.0)


@dataclass(frozen=True)
class Prediction:
    """One image's prediction: global ``label``, the ``task`` whose branch or classes gave it
    (None when tasks share classes), ``confidence`` in % (softmax probability), and the label's
    ``class_name`` when the dataset names its classes (an image folder), else None."""

    path: str
    label: int
    task: str | None
    confidence: float
    class_name: str | None = None


def predict(directory: str | Path, paths: list[str], task: int | None = None) -> list[Prediction]:
    """Predict every image of ``paths`` with the run in ``directory``: Task-IL through task
    ``task`` (1-based) when given, else without a task label (the run's router or single head).

    Raises:
        PearlError: not a run directory, a missing or corrupt file, an unknown task, or a bad
            image (:func:`read_image`).
    """
    opened = open_run(directory)
    if opened.progress is None or not opened.progress.learned:
        raise PearlError(f"{directory} has no task learned yet; nothing to predict with")
    names = [r.task for r in opened.progress.records]
    name = None if task is None else f"task{task}"
    if name is not None and name not in names:
        raise PearlError(f"--task {task}: the run learned tasks 1 to {len(names)}")
    bench = run_benchmark(opened)
    images = torch.stack([read_image(p, bench.image_shape) for p in paths])
    learner = load_learner(opened.config, bench, opened.store, opened.progress, learning=False)
    labels, tasks, confidence = learner.predict(normalise(images, bench.spec), name)
    return [Prediction(str(p), int(label), names[int(t)] if t >= 0 else None, 100.0 * float(c),
                       bench.class_names[int(label)] if bench.class_names else None)
            for p, label, t, c in zip(paths, labels, tasks, confidence)]
