"""User benchmarks over an image folder (train/<class>/, test/<class>/), tested on real MNIST
digits written as PNG files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pearl_cl.commands import cli
from pearl_cl.commands.export import export
from pearl_cl.commands.predict import predict
from pearl_cl.data.benchmarks import make_benchmark
from pearl_cl.data.folder import read_image_folder
from pearl_cl.errors import ConfigError, DataError, PearlError
from pearl_cl.engine.operations import resume, rollback
from pearl_cl.engine.runner import run

from conftest import small_config

NAMES = ("zero", "one", "two", "three")


def _write_tree(root: Path, mnist, per_class: int = 30) -> dict[str, torch.Tensor]:
    """MNIST digits 0–3 as PNGs under root/{train,test}/<name>/; returns the written train pixels."""
    written = {}
    for split, images, labels in (("train", mnist.train_images, mnist.train_labels), ("test", mnist.test_images, mnist.test_labels)):
        for digit, name in enumerate(NAMES):
            folder = root / split / name
            folder.mkdir(parents=True)
            picked = images[labels == digit][:per_class]
            for k, image in enumerate(picked):
                Image.fromarray(image[0].numpy()).save(folder / f"{k:03d}.png")
            if split == "train":
                written[name] = picked
    return written


@pytest.fixture(scope="module")
def tree(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("folder") / "digits"
    return root, _write_tree(root, mnist)


def test_reads_the_exact_pixels_with_sorted_class_names(tree):
    root, written = tree
    images = read_image_folder(root)
    assert images.image_shape == (1, 28, 28)
    # sorted names: one, three, two, zero
    for label, name in enumerate(sorted(NAMES)):
        assert torch.equal(images.train_images[images.train_labels == label], written[name])


def test_benchmark_file_by_class_names_and_relative_folder(tree, tmp_path):
    root, written = tree
    spec_file = root.parent / "digits.yaml"
    spec_file.write_text("image_folder: digits\ntasks: [[zero, one], [two, three]]\nimage_size: [32, 32]\n")
    bench = make_benchmark(str(spec_file), seed=0, val_fraction=0.0)
    assert [t.classes for t in bench.tasks] == [(3, 0), (2, 1)] and bench.image_shape == (1, 32, 32)
    pixels = torch.cat([written[n] for n in NAMES]).double() / 255  # statistics measured on the four classes
    assert bench.spec.mean[0] == pytest.approx(pixels.mean().item(), abs=0.02)
    even = make_benchmark(str(_yaml(tmp_path, image_folder=str(root), classes_per_task=2)), seed=0)
    assert [t.classes for t in even.tasks] == [(0, 1), (2, 3)]


def _yaml(tmp_path: Path, **data) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("data, message", [
    ({"tasks": [["zero", "cat"]]}, "class 'cat' of task 1 is not a class folder"),
    ({"tasks": [["zero"], ["zero", "one"]]}, "class zero is in task 1 and task 2"),
    ({}, "give either tasks (lists of class folder names) or classes_per_task, not neither"),
    ({"classes_per_task": 9}, "classes_per_task must divide the 4 classes, got 9"),
    ({"classes_per_task": 3}, "classes_per_task must divide the 4 classes, got 3"),
    ({"classes_per_task": 2, "image_size": [32]}, "image_size must be [height, width]"),
    ({"classes_per_task": 2, "colour": 1}, "it needs exactly dataset and tasks, or image_folder"),
])
def test_bad_benchmark_files_name_the_fix(tree, tmp_path, data, message):
    with pytest.raises(ConfigError) as err:
        make_benchmark(str(_yaml(tmp_path, image_folder=str(tree[0]), **data)), seed=0)
    assert message in str(err.value)


def test_bad_trees_are_clear_errors(tmp_path, mnist):
    root = tmp_path / "t"
    _write_tree(root, mnist, per_class=2)
    (root / "test" / "zero").rename(root / "test" / "nought")
    with pytest.raises(ConfigError, match="only in one: nought, zero"):
        make_benchmark(str(_yaml(tmp_path, image_folder=str(root), classes_per_task=2)), seed=0)
    (root / "test" / "nought").rename(root / "test" / "zero")
    Image.fromarray(np.zeros((30, 30), dtype=np.uint8)).save(root / "train" / "one" / "big.png")
    with pytest.raises(DataError, match="is 30×30, not 28×28.*add image_size"):
        read_image_folder(root)
    (root / "train" / "one" / "big.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image .*big.png"):
        read_image_folder(root)
    with pytest.raises(ConfigError, match="has no train/ sub-folder; lay it out as"):
        make_benchmark(str(_yaml(tmp_path, image_folder=str(root / "train"), classes_per_task=1)), seed=0)


def test_run_on_image_folder_keeps_a_portable_copy_and_resumes(tree, tmp_path):
    root, _ = tree
    spec_file = root.parent / "pairs.yaml"
    spec_file.write_text("image_folder: digits\ntasks: [[zero, one], [two, three]]\n")
    config = small_config(tmp_path, benchmark=str(spec_file), backbone__name="mlp", data__val_fraction=0.0)
    result = run(config)
    copy = yaml.safe_load((result.directory / "benchmark.yaml").read_text())
    assert copy["image_folder"] == str(root.resolve())
    assert result.metrics["scenarios"]["task-il"]["average_accuracy"] > 75.0
    rollback(result.directory, 1)
    again = resume(result.directory)
    assert np.array_equal(again.accuracy["task-il"], result.accuracy["task-il"], equal_nan=True)
    assert cli.main(["run", "--benchmark", str(_yaml(tmp_path, image_folder="nowhere", classes_per_task=1)),
                     "--out", str(tmp_path / "bad")]) == 2


def test_numbered_class_folders_can_be_listed_as_numbers(tmp_path, mnist):
    root = tmp_path / "numbered"
    for split in ("train", "test"):
        for digit in (0, 1):
            (root / split / str(digit)).mkdir(parents=True)
            for k, image in enumerate(mnist.test_images[mnist.test_labels == digit][:3]):
                Image.fromarray(image[0].numpy()).save(root / split / str(digit) / f"{k}.png")
    bench = make_benchmark(str(_yaml(tmp_path, image_folder=str(root), tasks=[[1], [0]])), seed=0, val_fraction=0.0)
    assert [t.classes for t in bench.tasks] == [(1,), (0,)]


def test_predict_and_export_read_only_the_run_directory(tmp_path, mnist, capsys):
    root = tmp_path / "digits"
    _write_tree(root, mnist, per_class=20)
    spec_file = tmp_path / "pairs.yaml"
    spec_file.write_text("image_folder: digits\ntasks: [[zero, one], [two, three]]\n")
    result = run(small_config(tmp_path, benchmark=str(spec_file), backbone__name="mlp", data__val_fraction=0.0,
                              pearl__rank_rule="budget"))  # the rule whose restore measures on the reference task's images
    image = tmp_path / "digit.png"
    shutil.copy(root / "test" / "two" / "000.png", image)
    before = predict(result.directory, [str(image)])
    shutil.rmtree(root)
    spec_file.unlink()
    after = predict(result.directory, [str(image)])
    assert after == before and after[0].class_name == sorted(NAMES)[after[0].label]
    manifest = json.loads((export(result.directory, 2, tmp_path / "export") / "export.json").read_text())
    assert manifest["classes"] == [2, 1] and manifest["normalise"]["mean"] == list(json.loads(
        (result.directory / "data.json").read_text())["spec"]["mean"])
    assert cli.main(["predict", str(result.directory), str(image)]) == 0
    assert f"({after[0].class_name})" in capsys.readouterr().out


def test_a_corrupt_data_record_is_named(tmp_path, mnist):
    result = run(small_config(tmp_path, backbone__name="mlp", data__train_per_task=200, data__test_per_task=50,
                              train__epochs=1, train__reference_epochs=1))
    path = result.directory / "data.json"
    path.write_text(path.read_text().replace('"tasks"', '"task"'))
    with pytest.raises(PearlError, match="data.json is corrupt"):
        predict(result.directory, [])
