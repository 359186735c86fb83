"""User image folders: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (torchvision's
ImageFolder layout), for benchmark files with an ``image_folder`` key (our design).

torchvision's ``ImageFolder`` lists the classes (sorted folder names; class ``k`` is the
``k``-th name) and the image files; Pillow decodes them. Every image is held in memory as
uint8: grey (1 channel) when every image of the tree is greyscale (a grey mode: L, LA, I, F or 1;
palette images count as colour), else RGB. Images are resized
to ``image_size`` (H, W) when it is given (bilinear, with antialiasing); without it they must all
share one size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pearl_cl.data.images import ImageSet
from pearl_cl.errors import DataError

SPLITS = ("train", "test")


def folder_classes(root: Path) -> list[str]:
    """The class names of ``root/train`` (sorted sub-folder names).

    Raises:
        DataError: ``root/train`` or ``root/test`` is missing, or they hold different classes.
    """
    from torchvision.datasets.folder import find_classes

    found = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"image folder {root} has no {split}/ sub-folder; lay it out as {root}/train/<class>/<image> "
                            f"and {root}/test/<class>/<image>")
        try:
            found[split] = find_classes(str(root / split))[0]
        except FileNotFoundError as exc:
            raise DataError(f"image folder {root / split} holds no class folders; put each class's images in "
                            f"{root / split}/<class>/") from exc
    if found["train"] != found["test"]:
        only = sorted(set(found["train"]) ^ set(found["test"]))
        raise DataError(f"image folder {root}: train/ and test/ must hold the same class folders; only in one: {', '.join(only)}")
    return found["train"]


def _read_split(folder: Path, image_size: tuple[int, int] | None) -> tuple[list, torch.Tensor, list[str]]:
    """PIL images (decoded), labels, and file paths of one split."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder

    try:
        listing = ImageFolder(str(folder), loader=lambda p: p)
    except FileNotFoundError as exc:
        raise DataError(f"image folder {folder}: {exc}") from exc
    images, labels, paths = [], [], []
    for path, label in listing.samples:
        try:
            with Image.open(path) as handle:
                grey = handle.getbands()[0] in ("L", "I", "F", "1")  # L, LA, I, I;16, F, 1
                image = handle.convert("L") if grey else handle.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {path} ({exc}); remove it or replace it with a PNG or JPEG") from exc
        if image_size is not None:
            image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR, reducing_gap=None)
        images.append(image)
        labels.append(label)
        paths.append(path)
    return images, torch.tensor(labels, dtype=torch.long), paths


def _to_tensor(images: list, paths: list[str], rgb: bool) -> torch.Tensor:
    """``(N, C, H, W)`` uint8 from PIL images, all converted to RGB when ``rgb``."""
    size = images[0].size
    arrays = []
    for image, path in zip(images, paths):
        if image.size != size:
            raise DataError(f"image {path} is {image.size[0]}×{image.size[1]}, not {size[0]}×{size[1]} like {paths[0]}; "
                            f"add image_size: [H, W] to the benchmark file to resize every image")
        array = np.asarray(image.convert("RGB") if rgb else image, dtype=np.uint8)
        arrays.append(array.reshape(array.shape[0], array.shape[1], -1))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def read_image_folder(root: Path, image_size: tuple[int, int] | None = None) -> ImageSet:
    """Every image of ``root/train`` and ``root/test`` (module docstring), labels by sorted class name.

    Raises:
        DataError: a missing split, different classes in the two splits, a class folder with no
            images, an unreadable image, or images of different sizes without ``image_size``.
    """
    names = folder_classes(root)
    splits = {split: _read_split(root / split, image_size) for split in SPLITS}
    rgb = any(image.mode == "RGB" for images, _, _ in splits.values() for image in images)
    tensors = {split: _to_tensor(images, paths, rgb) for split, (images, _, paths) in splits.items()}
    if tensors["train"].shape[1:] != tensors["test"].shape[1:]:
        raise DataError(f"image folder {root}: train images are {tuple(tensors['train'].shape[2:])} but test images "
                        f"{tuple(tensors['test'].shape[2:])}; add image_size: [H, W] to the benchmark file")
    return ImageSet(root.name, tensors["train"], splits["train"][1], tensors["test"], splits["test"][1], source=str(root),
                    class_names=tuple(names))
