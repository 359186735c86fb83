"""Peak memory of runs on image-file benchmarks of growing size: does memory grow with the data?

    .venv/bin/python benchmarks/memory.py [sizes=10000,50000,100000] [workers=2] [method=pearl]
                                          [keep=DIR] [set=KEY=VALUE;KEY=VALUE]

For each size N it writes N synthetic 64×64 RGB JPEG training images (200 classes, N/200 each)
and 10 validation images per class in the published TinyImageNet layout
(``tiny-imagenet-200/{wnids.txt, train/<wnid>/images/, val/images/, val/val_annotations.txt}``)
into a temporary folder, runs ``pearl-cl run --benchmark split-tinyimagenet`` on it in a fresh
process (the MLP, 20 optimiser steps per task, ``data.workers``; every image is still read by
the probe, the router statistics and the evaluation) and prints the run's peak resident memory
(``metrics.json``, ``VmHWM``) beside the size of the images as uint8 and as float32. Each image
is a class colour plus noise, so the files are real JPEGs of TinyImageNet's size, not its
content. ``keep=DIR`` writes the folders under DIR and keeps them; ``set`` adds config
overrides, separated by ``;``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 200
VAL_PER_CLASS = 10
SIZE = 64


def write_tinyimagenet(root: Path, n_train: int, seed: int = 0) -> None:
    """``n_train`` training and ``VAL_PER_CLASS`` · 200 validation JPEGs in TinyImageNet's layout under ``root``."""
    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{k:08d}" for k in range(CLASSES)]
    colours = rng.integers(0, 256, size=(CLASSES, 3))
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")

    def image(label: int) -> Image.Image:
        noise = rng.normal(0, 40, size=(SIZE, SIZE, 3))
        return Image.fromarray(np.clip(colours[label] + noise, 0, 255).astype(np.uint8))

    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for k in range(n_train // CLASSES):
            image(label).save(images / f"{wnid}_{k}.JPEG", quality=90)
    lines = []
    for k in range(VAL_PER_CLASS * CLASSES):
        label = k % CLASSES
        image(label).save(folder / "val" / "images" / f"val_{k}.JPEG", quality=90)
        lines.append(f"val_{k}.JPEG\t{wnids[label]}\t0\t0\t{SIZE}\t{SIZE}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def peak_of_run(data_root: Path, out: Path, workers: int, method: str, overrides: list[str]) -> tuple[dict, float]:
    """``metrics.json`` of a ``pearl-cl run`` on the folder, and its wall seconds."""
    sets = ["backbone.name=mlp", "train.iterations=20", f"data.workers={workers}", *overrides]
    argv = [sys.executable, "-m", "pearl_cl", "run", "--benchmark", "split-tinyimagenet", "--method", method,
            "--data-root", str(data_root), "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


def main(args: list[str]) -> None:
    options = dict(a.split("=", 1) for a in args)
    sizes = [int(s) for s in options.get("sizes", "10000,50000,100000").split(",")]
    workers, method = int(options.get("workers", 2)), options.get("method", "pearl")
    overrides = [s for s in options.get("set", "").split(";") if s]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(options.get("keep", tmp))
        for n in sizes:
            root = base / f"tinyimagenet-{n}"
            start = time.perf_counter()
            if not (root / "tiny-imagenet-200").is_dir():
                write_tinyimagenet(root, n)
            written = time.perf_counter() - start
            metrics, seconds = peak_of_run(root, Path(tmp) / f"run-{n}", workers, method, overrides)
            images = n + VAL_PER_CLASS * CLASSES
            uint8 = images * 3 * SIZE * SIZE
            rows.append((n, uint8 / 2**20, 4 * uint8 / 2**20, metrics["peak_memory_bytes"] / 2**20, seconds, written))
            print(f"{n:,} training images: peak {rows[-1][3]:,.0f} MiB, run {seconds:.0f} s (folder written in "
                  f"{written:.0f} s)", flush=True)
    print()
    print("| training images | images as uint8 MiB | as float32 MiB | peak RSS MiB | peak / float32 | run s |")
    print("|---|---|---|---|---|---|")
    for n, uint8, float32, peak, seconds, _ in rows:
        print(f"| {n:,} | {uint8:,.0f} | {float32:,.0f} | {peak:,.0f} | {peak / float32:.2f} | {seconds:.0f} |")
    if len(rows) > 1:
        (n0, _, f0, p0, _, _), (n1, _, f1, p1, _, _) = rows[0], rows[-1]
        print(f"\nfrom {n0:,} to {n1:,} images the data grows by {f1 - f0:,.0f} MiB as float32 and the peak by "
              f"{p1 - p0:,.0f} MiB ({(p1 - p0) / (f1 - f0):.3f} MiB per MiB of data)")


if __name__ == "__main__":
    main(sys.argv[1:])
