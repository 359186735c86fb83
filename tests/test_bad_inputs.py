"""Hand-written bad inputs across every command (the table in docs/operations.md, "Bad input").

Each row builds one bad input in a fresh folder and runs ``pearl-cl`` on it. Every row must end
with exit status 2 and one line on stderr that starts ``pearl-cl: error:`` and contains the
row's text (which names the input or the fix), with no traceback, and every file that existed
before the command must be byte for byte as it was (the write lock's two files aside).
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from pearl_cl.commands import cli
from pearl_cl.config import load_config
from pearl_cl.engine.lock import LOCK, OWNER
from pearl_cl.engine.runner import run

TINY = dict(backbone__name="mlp", data__train_per_task=200, data__test_per_task=60, train__epochs=1,
            train__reference_epochs=1, train__batch_size=32, routing__sample=100, routing__random_features=64)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 5-task PEARL run on real MNIST with the MLP (a few seconds)."""
    return run(load_config(out=str(tmp_path_factory.mktemp("finished") / "run"), **TINY)).directory


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` × ``height`` grey pixels but holds almost no data (a
    decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


class Evil:
    """Pickles to a call of ``os.system``: what a crafted dataset file would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


class Pointers:
    """Pickles to ``numpy.ndarray((1,), dtype('O'), buffer=…)``: an object array whose item is a
    pointer read from the file (touching it would crash the reader)."""

    def __reduce__(self):
        return np.ndarray, ((1,), np.dtype("O"), b"AAAAAAAA")


def _npy_header(path: Path) -> Path:
    """A .npy file whose header claims a 100000×100000 float64 array and which holds no data."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    return path


@dataclass
class Scene:
    """The folder a row builds its input in, and the finished run it may copy."""

    tmp: Path
    finished: Path

    def run(self) -> Path:
        """A copy of the finished run."""
        copy = self.tmp / "run"
        if not copy.exists():
            shutil.copytree(self.finished, copy)
        return copy

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def flip(self, relative: str) -> Path:
        """The run copy with one byte of ``relative`` flipped, in the middle of the file."""
        path = self.run() / relative
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        return self.run()

    def folder(self, damage: Callable[[Path], object] = lambda root: None) -> str:
        """A benchmark file over a small image folder (two classes of 8×8 grey PNGs), after
        ``damage(root)``; returns the benchmark file's path."""
        root = self.tmp / "images"
        for split in ("train", "test"):
            for name in ("a", "b"):
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for k in range(4):
                    Image.fromarray(np.full((8, 8), 60 * k + (name == "b") * 20, dtype=np.uint8)).save(folder / f"{k}.png")
        damage(root)
        return str(self.write("bench.yaml", "image_folder: images\nclasses_per_task: 1\n"))

    def cifar(self, first: bytes) -> str:
        """A CIFAR-10 folder whose first batch file holds ``first``; returns the data root."""
        folder = self.tmp / "cifar" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        (folder / "data_batch_1").write_bytes(first)
        return str(folder.parent)


def _run(*args: str) -> list[str]:
    return ["run", *args, "--set", "backbone.name=mlp"]


def _truncated(root: Path) -> None:
    """Its header is whole (the folder loads), its pixel data cut: found when training reads it."""
    path = root / "train" / "a" / "0.png"
    path.write_bytes(path.read_bytes()[:45])


ROWS: list[tuple[str, Callable[[Scene], list[str]], str]] = [
    # config files and --set
    ("unknown key", lambda s: _run("--set", "train.epoch=2"), "unknown config key 'train.epoch'"),
    ("wrong type", lambda s: _run("--set", "train.epochs=two"), "'train.epochs' needs a value of type int"),
    ("out of range", lambda s: _run("--set", "train.epochs=0"), "train.epochs must be >= 1, got 0"),
    ("no equals sign", lambda s: _run("--set", "train.epochs"), "write --set key=value"),
    ("malformed --set YAML", lambda s: _run("--set", "train.epochs=[1"), "the value is not valid YAML"),
    ("unknown method", lambda s: _run("--method", "pearl2"), "unknown method 'pearl2'; choose one of"),
    ("unknown router", lambda s: _run("--set", "routing.router=nearest"), "routing.router"),
    ("unknown benchmark", lambda s: _run("--benchmark", "split-nmist"), "unknown benchmark 'split-nmist'"),
    ("missing config file", lambda s: _run("--config", str(s.tmp / "nope.yaml")), "nope.yaml: No such file"),
    ("config is a folder", lambda s: _run("--config", str(s.tmp)), "Is a directory"),
    ("malformed config YAML", lambda s: _run("--config", str(s.write("c.yaml", "train: {epochs: 2\n"))),
     "is not valid YAML"),
    ("config not a mapping", lambda s: _run("--config", str(s.write("c.yaml", "- 1\n"))), "must hold a mapping"),
    ("deeply nested config", lambda s: _run("--config", str(s.write("c.yaml", "[" * 5000))), "too deeply"),
    ("binary config", lambda s: _run("--config", str(s.write("c.yaml", b"\xff\xfe\x00"))), "is not UTF-8 text"),
    ("device not here", lambda s: _run("--set", "train.device=cuda:7"), "train.device='cuda:7' is not available"),
    ("precision off CUDA", lambda s: _run("--set", "train.precision=bf16", "--set", "train.device=cpu"),
     "train.precision"),
    ("--out is a file", lambda s: _run("--out", str(s.write("taken", "keep"))), "is a file, not a directory"),
    ("--out not empty", lambda s: _run("--out", str(s.write("full/x", "keep").parent)), "already exists and is not empty"),
    # benchmark files and image folders
    ("malformed benchmark YAML", lambda s: _run("--benchmark", str(s.write("b.yaml", "tasks: [[0, 1]\n"))),
     "benchmark file"),
    ("unknown dataset", lambda s: _run("--benchmark", str(s.write("b.yaml", "dataset: svhn\ntasks: [[0, 1]]\n"))),
     "unknown dataset 'svhn'"),
    ("missing image folder", lambda s: _run("--benchmark", str(s.write("b.yaml", "image_folder: none\n"
                                                                                  "classes_per_task: 1\n"))),
     "has no train/ sub-folder"),
    ("corrupt image", lambda s: _run("--benchmark", s.folder(lambda r: (r / "train/a/1.png").write_bytes(b"\x89PNG junk"))),
     "cannot read image"),
    ("empty image file", lambda s: _run("--benchmark", s.folder(lambda r: (r / "test/b/2.png").write_bytes(b""))),
     "cannot read image"),
    ("huge image", lambda s: _run("--benchmark", s.folder(lambda r: png_header_only(r / "train/b/0.png", 40000, 40000))),
     "over Pillow's limit"),
    ("truncated image", lambda s: _run("--benchmark", s.folder(_truncated), "--out", str(s.tmp / "out")),
     "image file is truncated"),
    ("empty class folder", lambda s: _run("--benchmark", s.folder(lambda r: [p.unlink() for p in (r / "test/b").iterdir()])),
     "put images in every class folder"),
    ("image over the pixel limit", lambda s: _run("--benchmark", s.folder(lambda r: png_header_only(r / "test/a/1.png",
                                                                                                      10000, 10000))),
     "is 10000×10000 = 100,000,000 pixels, over Pillow's limit"),
    ("crafted CIFAR pickle", lambda s: _run("--benchmark", "split-cifar10", "--data-root",
                                            s.cifar(pickle.dumps(Evil(s.tmp / "PWNED"), protocol=2))),
     "refers to posix.system"),
    ("CIFAR pickle of object pointers", lambda s: _run("--benchmark", "split-cifar10", "--data-root",
                                                       s.cifar(pickle.dumps(Pointers(), protocol=2))),
     "asks for the NumPy dtype dtype('O')"),
    ("truncated CIFAR pickle", lambda s: _run("--benchmark", "split-cifar10", "--data-root",
                                              s.cifar(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)})[:40])),
     "is not a CIFAR python-version file"),
    # resume
    ("resume with another config", lambda s: ["run", "--resume", str(s.run()), "--set", "train.lr=0.1"],
     "the options do not match the run"),
    ("resume with --config", lambda s: ["run", "--resume", str(s.run()), "--config", "x.yaml"], "drop --config"),
    ("resume a non-run", lambda s: ["run", "--resume", str(s.tmp)], "is not a pearl-cl run directory"),
    # predict
    ("predict a text file", lambda s: ["predict", str(s.run()), str(s.write("notes.txt", "hi"))], "unknown image format"),
    ("predict a missing image", lambda s: ["predict", str(s.run()), str(s.tmp / "gone.png")], "gone.png: no such file"),
    ("predict an empty PNG", lambda s: ["predict", str(s.run()), str(s.write("e.png", b""))], "cannot read image"),
    ("predict a huge image", lambda s: ["predict", str(s.run()), str(png_header_only(s.tmp / "h.png", 40000, 40000))],
     "over Pillow's limit"),
    ("predict a CMYK image", lambda s: ["predict", str(s.run()),
                                        str(Image.new("CMYK", (28, 28)).save(s.tmp / "c.jpg") or s.tmp / "c.jpg")],
     "its mode is CMYK"),
    ("predict a .npy claiming a huge array", lambda s: ["predict", str(s.run()), str(_npy_header(s.tmp / "big.npy"))],
     "not a whole .npy array"),
    ("predict with a task not learned", lambda s: ["predict", str(s.run()), str(s.tmp / "x.npy"), "--task", "9"],
     "the run learned tasks 1 to 5"),
    # export
    ("export a task not learned", lambda s: ["export", str(s.run()), "--task", "6", "--out", str(s.tmp / "e")],
     "the run learned tasks 1 to 5"),
    ("export the reference task", lambda s: ["export", str(s.run()), "--task", "1", "--out", str(s.tmp / "e")],
     "is the reference task"),
    ("export onto an existing path", lambda s: ["export", str(s.run()), "--task", "2", "--out", str(s.write("e", "x"))],
     "already exists"),
    ("export format", lambda s: ["export", str(s.run()), "--task", "2", "--format", "onnx", "--out", str(s.tmp / "e")],
     "unknown export format 'onnx'"),
    # rollback
    ("rollback past the end", lambda s: ["rollback", str(s.run()), "--to-task", "5"], "--to-task must be between 1 and 4"),
    ("rollback to task 0", lambda s: ["rollback", str(s.run()), "--to-task", "0"], "--to-task must be between 1 and 4"),
    # damaged run files
    ("flipped config.yaml", lambda s: ["predict", str(s.flip("config.yaml")), str(s.tmp / "x.npy")],
     "config.yaml is corrupt, or its entry in manifest.json is"),
    ("flipped progress.json", lambda s: ["run", "--resume", str(s.flip("progress.json"))], "progress.json is corrupt"),
    ("flipped task file", lambda s: ["predict", str(s.flip("tasks/task3.safetensors")), str(s.tmp / "x.npy")],
     "task3.safetensors is corrupt"),
    ("flipped data.json", lambda s: ["export", str(s.flip("data.json")), "--task", "2", "--out", str(s.tmp / "e")],
     "data.json is corrupt"),
    ("truncated manifest.json", lambda s: ["inspect", str(_truncate(s.run() / "manifest.json"))],
     "manifest.json is unreadable"),
    ("edited metrics.json", lambda s: ["report", str(_edit(s.run() / "metrics.json", '"tasks_learned": 5', '"tasks_learned": 6'))],
     "a report would show damaged figures"),
    ("damaged manifest entry", lambda s: ["inspect", str(_damage_entry(s.run(), "config.yaml"))],
     "Files that fail manifest.json: config.yaml"),
    ("malformed manifest entry", lambda s: ["inspect", str(_set_entry(s.run(), "metrics.json", 5))],
     "the entry of metrics.json is not a size and SHA-256"),
    ("manifest path outside", lambda s: ["inspect", str(_add_entry(s.run(), "../../etc/passwd"))],
     "a path outside the run directory"),
    # compare and report
    ("compare scenarios", lambda s: ["compare", "--scenarios", "task-il,task-il"], "give distinct scenarios"),
    ("compare methods", lambda s: ["compare", "--methods", "pearl,lora-r0"], "lora-r0"),
    ("report a non-run", lambda s: ["report", str(s.tmp)], "is neither a run directory"),
]


def _edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path.parent


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path.parent


def _damage_entry(root: Path, relative: str) -> Path:
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][relative]["sha256"] = "f" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _add_entry(root: Path, relative: str) -> Path:
    return _set_entry(root, relative, {"bytes": 1, "sha256": "0" * 64})


def _set_entry(root: Path, relative: str, entry) -> Path:
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][relative] = entry
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in (LOCK, OWNER)}


def test_the_table_has_at_least_30_distinct_rows():
    assert len(ROWS) >= 30 and len({name for name, _, _ in ROWS}) == len(ROWS)


@pytest.mark.parametrize("name, build, text", ROWS, ids=[name for name, _, _ in ROWS])
def test_a_bad_input_gives_one_clear_line_and_changes_nothing(name, build, text, finished, tmp_path, capsys):
    scene = Scene(tmp_path, finished)
    np.save(tmp_path / "x.npy", np.zeros((28, 28), dtype=np.uint8))
    argv = build(scene)
    before = _files(tmp_path)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("pearl-cl: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and text in err, err
    after = _files(tmp_path)
    assert {k: after.get(k) for k in before} == before  # nothing that existed was changed or removed
    assert not (tmp_path / "PWNED").exists()
