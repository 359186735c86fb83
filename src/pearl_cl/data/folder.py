"""User image folders: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*`` (torchvision's
ImageFolder layout), for benchmark files with an ``image_folder`` key (our design).

torchvision's ``ImageFolder`` lists the classes (sorted folder names; class ``k`` is the
``k``-th name) and the image files; Pillow reads them. The images stay in their files and are
decoded a batch at a time when used (:class:`~pearl_cl.data.files.ImageFiles`), as uint8: grey
(1 channel) when every image of the tree is greyscale (a grey mode: L, LA, I, F or 1; palette
images count as colour), else RGB. Images are resized to ``image_size`` (H, W) when it is given
(bilinear, with antialiasing); without it they must all share one size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pearl_cl.data.files import ImageFiles, opened_image
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


def _list_split(folder: Path) -> tuple[list[str], torch.Tensor, list[bool], list[tuple[int, int]]]:
    """File paths, labels, whether each image is grey, and each image's (W, H) of one split, from
    the image headers (nothing is decoded)."""
    from torchvision.datasets import ImageFolder

    try:
        listing = ImageFolder(str(folder), loader=lambda p: p)
    except FileNotFoundError as exc:
        raise DataError(f"image folder {folder}: {exc}; put images in every class folder, or remove the empty one "
                        f"from train/ and test/") from exc
    paths, labels, grey, sizes = [], [], [], []
    for path, label in listing.samples:
        with opened_image(path, "remove it or replace it with a PNG or JPEG") as handle:
            grey.append(handle.getbands()[0] in ("L", "I", "F", "1"))  # L, LA, I, I;16, F, 1
            sizes.append(handle.size)
        paths.append(path)
        labels.append(label)
    return paths, torch.tensor(labels, dtype=torch.long), grey, sizes


def read_image_folder(root: Path, image_size: tuple[int, int] | None = None) -> ImageSet:
    """Every image of ``root/train`` and ``root/test`` (module docstring), labels by sorted class
    name, as :class:`~pearl_cl.data.files.ImageFiles`: the headers are read here, the pixels when
    the images are used.

    Raises:
        DataError: a missing split, different classes in the two splits, a class folder with no
            images, an unreadable image, or images of different sizes without ``image_size``.
    """
    names = folder_classes(root)
    splits = {split: _list_split(root / split) for split in SPLITS}
    channels = 1 if all(all(grey) for _, _, grey, _ in splits.values()) else 3
    if image_size is None:
        first = splits["train"][3][0]
        for paths, _, _, sizes in splits.values():
            for path, size in zip(paths, sizes):
                if size != first:
                    raise DataError(f"image {path} is {size[0]}×{size[1]}, not {first[0]}×{first[1]} like "
                                    f"{splits['train'][0][0]}; add image_size: [H, W] to the benchmark file to resize "
                                    f"every image")
        image_size = (first[1], first[0])
    files = {split: ImageFiles(paths, channels, image_size, resize=True, fix="remove it or replace it with a PNG or JPEG")
             for split, (paths, _, _, _) in splits.items()}
    return ImageSet(root.name, files["train"], splits["train"][1], files["test"], splits["test"][1], source=str(root),
                    class_names=tuple(names))
