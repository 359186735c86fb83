"""TinyImageNet (Stanford CS231N, 200 classes of 64×64 RGB images) from its published folder.

No offline copy exists here: users unpack ``tiny-imagenet-200.zip`` under a folder DIR and pass
``--data-root DIR``. The published layout, read as is:

* ``tiny-imagenet-200/wnids.txt``: the 200 WordNet ids, one per line;
* ``tiny-imagenet-200/train/<wnid>/images/*.JPEG``: 500 training images per class;
* ``tiny-imagenet-200/val/images/*.JPEG`` with ``val/val_annotations.txt`` (tab-separated: file
  name, wnid, then a bounding box): 50 labelled images per class, used as the test set, as the
  CL literature does (the official test split has no labels).

Class k is the k-th wnid in sorted order (torchvision's ImageFolder convention). A few images
are greyscale JPEGs; they are converted to RGB. The images stay in their files and Pillow decodes
them a batch at a time when they are used (:class:`~pearl_cl.data.files.ImageFiles`): the
100,000 training images would take 1.2 GB as uint8, 4.9 GB as float32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pearl_cl.data.files import ImageFiles
from pearl_cl.data.images import ImageSet
from pearl_cl.errors import DataError

FOLDER = "tiny-imagenet-200"
SIZE = 64


def read_tinyimagenet(root: Path) -> ImageSet:
    """The training and validation images of ``root / tiny-imagenet-200``.

    Raises:
        DataError: a part of the layout is missing or malformed (names it).
    """
    folder = root / FOLDER
    wnids_file = folder / "wnids.txt"
    if not wnids_file.is_file():
        raise DataError(f"{wnids_file} is missing; unpack tiny-imagenet-200.zip under --data-root")
    wnids = sorted(line.strip() for line in wnids_file.read_text().splitlines() if line.strip())
    index = {w: k for k, w in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:
        files = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        if not files:
            raise DataError(f"{folder / 'train' / wnid / 'images'} holds no .JPEG images; unpack the archive again")
        train_paths += files
        train_labels += [index[wnid]] * len(files)
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DataError(f"{annotations} is missing; unpack tiny-imagenet-200.zip again")
    val_paths, val_labels = [], []
    for n, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{annotations} line {n}: expected 'file<TAB>wnid<TAB>box', with a wnid of wnids.txt")
        val_paths.append(folder / "val" / "images" / fields[0])
        val_labels.append(index[fields[1]])
    fix = "not TinyImageNet's 64×64 images: unpack tiny-imagenet-200.zip again"
    files = [ImageFiles(paths, 3, (SIZE, SIZE), fix=fix) for paths in (train_paths, val_paths)]
    for part in files:
        part.check_headers()
    return ImageSet("tinyimagenet", files[0], torch.tensor(train_labels, dtype=torch.long), files[1],
                    torch.tensor(val_labels, dtype=torch.long), source=str(folder))


def load_tinyimagenet(data_root: str | Path | None = None, download: bool = False) -> ImageSet:
    """TinyImageNet from ``data_root`` (``download`` is not offered: torchvision has no TinyImageNet).

    Raises:
        DataError: no ``data_root``, or the folder is missing or malformed (names how to get it).
    """
    if data_root is None or not (Path(data_root) / FOLDER).is_dir():
        where = f"{Path(data_root) / FOLDER} does not exist" if data_root is not None else "no --data-root given"
        raise DataError(f"tinyimagenet not found ({where}); download tiny-imagenet-200.zip from "
                        f"http://cs231n.stanford.edu/tiny-imagenet-200.zip, unpack it under a folder DIR and "
                        f"pass --data-root DIR")
    return read_tinyimagenet(Path(data_root))
