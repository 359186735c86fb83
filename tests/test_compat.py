"""A run directory written by pearl-cl 0.1 (before method sections, registered routers and
steps.csv) still opens with inspect and predict, and resumes to the numbers of 0.1's own
uninterrupted run. ``tests/data/run-v0.1`` is that run rolled back to task 3 by pearl-cl 0.1;
``run-v0.1-uninterrupted.json`` holds the counts of the same run learning all five tasks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pearl_cl.commands import cli
from pearl_cl.engine.operations import resume
from pearl_cl.engine.restore import load_learner, open_run
from pearl_cl.engine.runner import benchmark_for

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.slow


@pytest.fixture
def old_run(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(DATA / "run-v0.1", copy)
    return copy


def test_an_old_run_directory_opens_with_inspect_and_predict(old_run, tmp_path, capsys):
    assert cli.main(["inspect", str(old_run)]) == 0
    out = capsys.readouterr().out
    assert "every file matches manifest.json" in out and "incomplete: 3 of 5 tasks learned" in out
    opened = open_run(old_run)
    assert opened.config.lora.rank == 4  # pearl.fixed_rank of 0.1, mapped to its section
    assert opened.config.routing.sample is None  # 0.1 computed router statistics from every image
    assert opened.config.routing.router == "mahalanobis"
    bench = benchmark_for(opened.config)
    task = bench.tasks[2]
    raw = ((task.test_x[:1, 0] * 0.3081 + 0.1307) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    np.save(tmp_path / "digit.npy", raw[0])
    assert cli.main(["predict", str(old_run), str(tmp_path / "digit.npy")]) == 0
    learner = load_learner(opened.config, bench, opened.store, opened.progress, learning=False)
    classes, chosen, _ = learner.predict(task.test_x[:1])
    assert f"class {int(classes[0])}\ttask task{int(chosen[0]) + 1}" in capsys.readouterr().out
    assert set(learner.statistics["task2"].calibration) == {"mahalanobis", "energy", "max_prob", "entropy"}


def test_an_old_run_resumes_to_the_numbers_of_its_uninterrupted_run(old_run):
    expected = json.loads((DATA / "run-v0.1-uninterrupted.json").read_text())
    result = resume(old_run)
    progress = json.loads((old_run / "progress.json").read_text())
    assert result.metrics["status"] == "complete"
    assert progress["correct"] == expected["correct"] and progress["routed"] == expected["routed"]
    assert (old_run / "steps.csv").read_text().splitlines()[1].startswith("task4,")
