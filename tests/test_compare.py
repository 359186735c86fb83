"""``pearl-cl compare``: several methods and seeds in one process, one table, budget matching."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pearl_cl.commands import cli
from pearl_cl.commands.comparison import parse_methods
from pearl_cl.errors import ConfigError
from pearl_cl.core.rank import matched_fixed_rank

TINY = ["--set", "backbone.name=mlp", "--set", "backbone.width=0.25", "--set", "data.train_per_task=300",
        "--set", "data.test_per_task=100", "--set", "train.iterations=15", "--set", "train.batch_size=32",
        "--set", "pearl.epsilon=0.02", "--set", "pearl.r_max=8"]


@pytest.mark.slow
def test_compare_runs_every_method_and_seed_and_matches_pearls_budget(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = cli.main(["compare", "--methods", "finetune,lora,pearl,lora-matched", "--seeds", "2", "--seed", "3",
                     "--out", str(out), *TINY, "--set", "lora.rank=2"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    for text in ("Task-IL acc %", "class-il acc %", "params added", "state kept", "peak MiB", "±", "lora (r=2)",
                 "lora-matched (r=", str(out)):
        assert text in printed.out
    with open(out / "compare_runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [(r["method"], r["seed"]) for r in runs] == [
        (m, s) for s in ("3", "4") for m in ("finetune", "lora", "pearl", "lora-matched")]
    summary = json.loads((out / "compare.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert list(methods) == ["finetune", "lora", "pearl", "lora-matched"]
    assert methods["lora"]["settings"] == ["r=2"]
    finetune = [float(r["task_il_accuracy_pct"]) for r in runs if r["method"] == "finetune"]
    assert methods["finetune"]["task_il_accuracy_pct_mean"] == pytest.approx(np.mean(finetune))
    assert methods["finetune"]["task_il_accuracy_pct_std"] == pytest.approx(np.std(finetune, ddof=1))
    assert methods["finetune"]["routing_accuracy_pct_mean"] is not None  # class-IL: the class names its task
    for seed in ("3", "4"):
        pearl_dir = next(r["run_directory"] for r in runs if r["method"] == "pearl" and r["seed"] == seed)
        with open(f"{pearl_dir}/ranks.csv") as f:
            ranks = list(csv.DictReader(f))
        shapes = list(dict.fromkeys((int(r["rows"]), int(r["cols"])) for r in ranks))
        per_task = sum(int(r["parameters"]) for r in ranks) / 4
        matched = next(r for r in runs if r["method"] == "lora-matched" and r["seed"] == seed)
        rank = matched_fixed_rank(shapes, per_task)
        assert matched["setting"] == f"r={rank}"
        config = (tmp_path / "cmp" / "runs" / f"lora-matched-seed{seed}" / "config.yaml").read_text()
        assert f"lora:\n  rank: {rank}" in config and "method: lora" in config


@pytest.mark.parametrize("methods, message", [
    ("finetune,sgd", "unknown method 'sgd' in --methods"),
    ("lora-matched,pearl", "list one of pearl before it"),
    ("pearl,pearl", "names 'pearl' twice"),
    ("lora-r0", "unknown method 'lora-r0'"),
    ("lora-r01", "unknown method 'lora-r01'"),
    (" , ", "--methods is empty"),
])
def test_bad_method_lists_are_rejected_with_the_fix(methods, message):
    with pytest.raises(ConfigError, match=message):
        parse_methods(methods)


def test_bad_compare_input_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli.main(["compare", "--methods", "finetune", "--seeds", "0", "--out", str(out)]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert cli.main(["compare", "--methods", "finetune", "--out", str(out), "--set", "si.c=-1"]) == 2
    assert "si.c must be finite and >= 0" in capsys.readouterr().err
    assert cli.main(["compare", "--methods", "finetune", "--seed", str(2**32 - 2), "--seeds", "3", "--out", str(out)]) == 2
    assert "seed must be in [0, 2**32)" in capsys.readouterr().err  # every seed is checked before the first run
    assert not out.exists()


@pytest.mark.slow
def test_parallel_jobs_give_the_rows_of_one_after_another(tmp_path, capsys):
    """--jobs 2: the same runs in worker processes, rows in the same order, lora-matched after
    its seed's PEARL run; accuracies within float noise of the sequential comparison."""
    args = ["compare", "--methods", "pearl,lora-matched", "--seeds", "2", *TINY]
    assert cli.main([*args, "--out", str(tmp_path / "seq")]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "par"), "--jobs", "2"]) == 0, capsys.readouterr().err
    rows = {}
    for name in ("seq", "par"):
        with open(tmp_path / name / "compare_runs.csv") as f:
            rows[name] = list(csv.DictReader(f))
    assert [(r["method"], r["seed"], r["setting"]) for r in rows["par"]] == [(r["method"], r["seed"], r["setting"]) for r in rows["seq"]]
    for a, b in zip(rows["seq"], rows["par"]):
        for column in ("task_il_accuracy_pct", "routed_accuracy_pct"):
            assert abs(float(a[column]) - float(b[column])) <= 1.0, (a["method"], column)
    assert sorted(p.name for p in (tmp_path / "par" / "runs").iterdir()) == sorted(
        f"{m}-seed{s}" for m in ("pearl", "lora-matched") for s in (0, 1))
    assert cli.main([*args, "--out", str(tmp_path / "bad"), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
