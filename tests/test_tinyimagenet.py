"""TinyImageNet loader on a small tree written in exactly the published layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pearl_cl.data.benchmarks import make_benchmark
from pearl_cl.data.tinyimagenet import load_tinyimagenet
from pearl_cl.errors import DataError

WNIDS = [f"n{10000000 + 7 * k:08d}" for k in range(200)]


def _colour(k: int) -> tuple[int, int, int]:
    return (k % 256, (3 * k) % 256, 255 - k % 256)


def _tree(root, train_per_class: int = 2) -> None:
    """tiny-imagenet-200/: wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt;
    every image of class k is one flat colour, which JPEG keeps to within a few levels."""
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(reversed(WNIDS)) + "\n")  # the file's order is not the class order
    lines = []
    for k, wnid in enumerate(WNIDS):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(train_per_class):
            Image.new("RGB", (64, 64), _colour(k)).save(images / f"{wnid}_{i}.JPEG", "JPEG")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        name = f"val_{k}.JPEG"
        mode_image = Image.new("L", (64, 64), 128) if k == 5 else Image.new("RGB", (64, 64), _colour(k))
        mode_image.save(folder / "val" / "images" / name, "JPEG")  # class 5's val image is greyscale, as some are
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_split_tinyimagenet_reads_the_published_layout(tmp_path):
    _tree(tmp_path)
    bench = make_benchmark("split-tinyimagenet", seed=0, data_root=tmp_path, val_fraction=0.0)
    assert len(bench.tasks) == 10 and bench.image_shape == (3, 64, 64)
    assert [len(t.classes) for t in bench.tasks] == [20] * 10
    images = load_tinyimagenet(tmp_path)
    assert images.train_images.shape == (400, 3, 64, 64) and images.test_images.shape == (200, 3, 64, 64)
    for k in (0, 77, 199):  # class k is the k-th wnid in sorted order, its pixels its colour
        pixels = images.train_images[images.train_labels == k].float()
        assert np.allclose(pixels.mean(dim=(0, 2, 3)).numpy(), _colour(k), atol=4)
    grey = images.test_images[images.test_labels == 5][0]
    assert grey.shape == (3, 64, 64) and int(grey.max()) - int(grey.min()) <= 4  # converted to RGB


def test_broken_tinyimagenet_layouts_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="--data-root"):
        make_benchmark("split-tinyimagenet", seed=0)
    with pytest.raises(DataError, match="tiny-imagenet-200 does not exist"):
        make_benchmark("split-tinyimagenet", seed=0, data_root=tmp_path)
    _tree(tmp_path, train_per_class=1)
    folder = tmp_path / "tiny-imagenet-200"
    (folder / "val" / "images" / "val_3.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read image .*val_3.JPEG"):
        make_benchmark("split-tinyimagenet", seed=0, data_root=tmp_path)
    Image.new("RGB", (32, 32)).save(folder / "val" / "images" / "val_3.JPEG", "JPEG")
    with pytest.raises(DataError, match="val_3.JPEG is 32×32, not 64×64"):
        make_benchmark("split-tinyimagenet", seed=0, data_root=tmp_path)
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="line 1"):
        make_benchmark("split-tinyimagenet", seed=0, data_root=tmp_path)
    for image in (folder / "train" / WNIDS[9] / "images").iterdir():
        image.unlink()
    with pytest.raises(DataError, match="holds no .JPEG images"):
        make_benchmark("split-tinyimagenet", seed=0, data_root=tmp_path)
