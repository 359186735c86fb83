"""Plots and ``report.md`` (``pearl-cl report``) from real tiny runs: valid, non-blank PNGs listed
in the manifest, the headline numbers of ``metrics.json``, and clear errors for folders that are
neither a run nor a comparison."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from matplotlib.image import imread

from pearl_cl.commands import cli
from pearl_cl.commands.compare import compare
from pearl_cl.commands.comparison import parse_methods
from pearl_cl.commands.plots import rank_plot
from pearl_cl.engine.operations import inspect
from pearl_cl.engine.store import RunStore, sha256

from conftest import small_config

pytestmark = pytest.mark.slow  # trains several tasks or spawns processes; make test-fast leaves it out

PNGS = ("plots/accuracy_matrix.png", "plots/ranks.png", "plots/accuracy_vs_parameters.png")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """A real comparison on a split-MNIST subset: finetune, fixed-rank LoRA at rank 1, PEARL; one seed."""
    root = tmp_path_factory.mktemp("plots")
    config = small_config(root, backbone__name="mlp", data__train_per_task=200, data__test_per_task=100,
                          train__iterations=15, pearl__epsilon=0.02, pearl__r_max=8)
    return compare(config, parse_methods("finetune,lora-r1,pearl"), [0], root / "cmp")


def _check_png(path):
    """A readable PNG of a real size with more than one colour."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert float(np.var(image[..., :3])) > 0


def _check_report(directory, metrics):
    """``report.md`` links every plot relatively and holds the run's headline numbers."""
    text = (directory / "report.md").read_text()
    for png in PNGS:
        assert f"]({png})" in text
        _check_png(directory / png)
    for scenario in metrics["scenarios"].values():
        for key in ("average_accuracy", "average_incremental_accuracy", "forgetting", "bwt"):
            assert f"| {scenario[key]:.2f} |" in text, key
    assert f"{metrics['parameters_added_after_reference']['count']:,}" in text
    store = RunStore(directory)
    for name in (*PNGS, "report.md"):
        assert store.files[name]["sha256"] == sha256((directory / name).read_bytes())
    return text


def test_report_of_a_run_with_fixed_rank_lora_runs(comparison, capsys):
    runs = comparison.directory / "runs"
    pearl = runs / "pearl-seed0"
    assert cli.main(["report", str(pearl), str(runs / "lora-r1-seed0"), str(runs / "finetune-seed0")]) == 0
    printed = capsys.readouterr().out
    for name in (*PNGS, "report.md"):
        assert f"wrote {pearl / name}" in printed
    metrics = json.loads((pearl / "metrics.json").read_text())
    text = _check_report(pearl, metrics)
    for label in ("| pearl |", "| lora (r=1) |", "| finetune |", "fc1", "proximity min–max"):
        assert label in text
    assert inspect(pearl)[1] == []  # the run directory stays whole: every file matches its checksum


def test_compare_writes_the_report_of_its_pearl_run_and_every_method(comparison):
    directory = comparison.directory
    metrics = json.loads((directory / "runs" / "pearl-seed0" / "metrics.json").read_text())
    text = _check_report(directory, metrics)
    for method in comparison.methods:
        assert f"| {method['method']} " in text
    assert "The pearl run of seed 0" in text


def test_report_out_folder_and_no_rank_plot_for_a_baseline(comparison, tmp_path):
    finetune = comparison.directory / "runs" / "finetune-seed0"
    assert rank_plot(RunStore(tmp_path / "unused"), inspect(finetune)[0]) is None
    out = tmp_path / "report"
    assert cli.main(["report", str(finetune), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    links = re.findall(r"\]\((plots/[^)]+)\)", text)
    assert links == ["plots/accuracy_matrix.png", "plots/accuracy_vs_parameters.png"]
    for link in links:
        _check_png(out / link)
    assert not (out / "plots" / "ranks.png").exists() and not (finetune / "report.md").exists()


def test_a_folder_that_is_not_a_run_exits_2_naming_it(tmp_path, capsys, comparison):
    (tmp_path / "empty").mkdir()
    for folder, what in ((tmp_path / "empty", "is neither a run directory"), (tmp_path / "missing", "does not exist")):
        assert cli.main(["report", str(folder)]) == 2
        err = capsys.readouterr().err
        assert str(folder) in err and what in err and "--out folder of pearl-cl run or of pearl-cl compare" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text((comparison.directory / "runs" / "pearl-seed0" / "config.yaml").read_text())
    (other / "manifest.json").write_text("{}")
    assert cli.main(["report", str(comparison.directory / "runs" / "pearl-seed0"), str(other)]) == 2
    assert str(other) in capsys.readouterr().err


def test_runs_of_another_benchmark_are_refused(comparison, tmp_path, capsys):
    data = json.loads((comparison.directory / "compare.json").read_text())
    data["settings"]["benchmark"] = "split-fashion-mnist"
    other = RunStore(tmp_path / "fashion")
    other.write_json("compare.json", data)
    (other.root / "runs").mkdir()
    pearl = comparison.directory / "runs" / "pearl-seed0"
    assert cli.main(["report", str(pearl), str(other.root)]) == 2
    err = capsys.readouterr().err
    assert f"{other.root} holds runs of split-fashion-mnist" in err and "give only directories of split-mnist" in err
