"""Images read from their files when they are used, not held in memory (our design; Pillow decodes).

:class:`ImageFiles` stands where an ``(N, C, H, W)`` uint8 tensor of pixels would: ``files[rows]``
decodes those files into such a tensor, ``len``, ``shape`` and ``dtype`` are those of the tensor
it stands for. It is also a ``torch.utils.data.Dataset`` (``files[i]`` with an int is one
``(C, H, W)`` image), so a ``DataLoader`` with worker processes can decode a training batch
while the network trains on the one before (:meth:`pearl_cl.data.pixels.NormalisedImages.batches`).
What it keeps per image is its path (a few dozen bytes), so a benchmark of image files takes
memory for one batch at a time, whatever its size.
"""

from __future__ import annotations

import warnings
from struct import error as struct_error
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pearl_cl.errors import DataError

MODES = {1: "L", 3: "RGB"}  # channels -> the Pillow mode images are converted to


# what Pillow raises on a damaged file (its own fuzzing tests expect these besides OSError)
DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, NotImplementedError, OverflowError, MemoryError,
                 IndexError, TypeError, struct_error)


@contextmanager
def opened_image(path: str | Path, fix: str) -> Iterator["PIL.Image.Image"]:  # noqa: F821 (Pillow loads lazily)
    """The image file at ``path`` opened by Pillow (its header read, no pixel decoded yet) for the
    block; the image is closed after it. An image of more pixels than Pillow's decompression-bomb
    limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485 unless changed) is refused from its header,
    before any pixel is decoded. Our design, on Pillow's limit.

    Raises:
        DataError: the file cannot be opened or decoded (also inside the block), is not an image,
            or has too many pixels; names the file and ends with ``fix``.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with our message
            handle = Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow's own refusal, at twice its limit
        raise DataError(f"image {path} is over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                        f"(PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs: {exc}); {fix}") from exc
    except DECODE_ERRORS as exc:
        raise DataError(f"cannot read image {path} ({exc}); {fix}") from exc
    with handle:
        width, height = handle.size
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and width * height > limit:
            raise DataError(f"image {path} is {width}×{height} = {width * height:,} pixels, over Pillow's limit of "
                            f"{limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); {fix}")
        try:
            yield handle
        except DataError:
            raise
        except DECODE_ERRORS as exc:
            raise DataError(f"cannot read image {path} ({exc}); {fix}") from exc


class ImageFiles(Dataset):
    """``(N, C, H, W)`` uint8 images read from ``paths`` when indexed.

    Each file is decoded by Pillow, converted to grey (``channels`` 1) or RGB (3), and resized to
    ``size`` = (H, W) (bilinear, antialiased) when it is not that size and ``resize`` is True.

    Raises:
        ValueError: ``channels`` is not 1 or 3.
        DataError: (when indexed) a file cannot be read, or has the wrong size without ``resize``
            (names the file and the fix).
    """

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str | Path], channels: int, size: tuple[int, int], resize: bool = False,
                 fix: str = "replace or remove it") -> None:
        if channels not in MODES:
            raise ValueError(f"ImageFiles reads grey (1) or RGB (3) images, not {channels} channels")
        self.paths = np.array([str(p) for p in paths], dtype=object)
        self.channels, self.size, self.resize, self.fix = channels, (int(size[0]), int(size[1])), resize, fix

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> torch.Size:
        """``(N, C, H, W)``."""
        return torch.Size((len(self.paths), self.channels, *self.size))

    def dim(self) -> int:
        """4, as the tensor of pixels it stands for."""
        return 4

    def numel(self) -> int:
        """N·C·H·W."""
        return self.shape.numel()

    def check_headers(self) -> None:
        """Open every file's header (no pixel is decoded), so that an unreadable file or, without
        ``resize``, one of the wrong size is found before any training.

        Raises:
            DataError: names the first such file and the fix.
        """
        for path in self.paths:
            with opened_image(path, self.fix) as handle:
                size = handle.size
            if not self.resize and size != (self.size[1], self.size[0]):
                raise DataError(f"image {path} is {size[0]}×{size[1]}, not {self.size[1]}×{self.size[0]}; {self.fix}")

    def decode(self, k: int) -> torch.Tensor:
        """``(C, H, W)`` uint8 pixels of image ``k``.

        Raises:
            DataError: unreadable file, or the wrong size without ``resize``.
        """
        from PIL import Image

        path = self.paths[k]
        with opened_image(path, self.fix) as handle:
            image = handle.convert(MODES[self.channels])
        height, width = self.size
        if image.size != (width, height):
            if not self.resize:
                raise DataError(f"image {path} is {image.size[0]}×{image.size[1]}, not {width}×{height}; {self.fix}")
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
        array = np.asarray(image, dtype=np.uint8).reshape(height, width, self.channels)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def __getitem__(self, index) -> torch.Tensor:
        """Image ``index`` ``(C, H, W)`` for an int; ``(B, C, H, W)`` for a slice, index tensor or
        boolean mask (decoded one after another, in this process)."""
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.dim() == 0):
            return self.decode(int(index))
        rows = self.rows(index)
        if len(rows) == 0:
            return torch.zeros((0, self.channels, *self.size), dtype=torch.uint8)
        return torch.stack([self.decode(int(k)) for k in rows])

    def rows(self, index) -> np.ndarray:
        """The image positions ``index`` (a slice, index tensor, boolean mask or sequence) selects."""
        if torch.is_tensor(index):
            index = index.cpu().numpy()
        return np.arange(len(self.paths))[index]

    def take(self, index) -> ImageFiles:
        """The images ``index`` selects, still files (nothing is read)."""
        return ImageFiles(self.paths[self.rows(index)], self.channels, self.size, self.resize, self.fix)

    @staticmethod
    def cat(parts: Sequence[ImageFiles]) -> ImageFiles:
        """``parts`` one after another (they must share channels, size and resizing).

        Raises:
            ValueError: no parts, or parts read differently.
        """
        if not parts or any((p.channels, p.size, p.resize) != (parts[0].channels, parts[0].size, parts[0].resize)
                            for p in parts):
            raise ValueError("ImageFiles.cat needs at least one part, and parts of one channel count and size")
        return ImageFiles(np.concatenate([p.paths for p in parts]), parts[0].channels, parts[0].size, parts[0].resize,
                          parts[0].fix)
