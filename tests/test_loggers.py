"""The per-step logs: steps.csv in every run (one row per optimiser step of every fit, kept in
step with the run's tasks across rollback) and TensorBoard event files on request."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pearl_cl.config import load_config
from pearl_cl.engine.operations import rollback
from pearl_cl.engine.runner import run
from pearl_cl.errors import ConfigError


def _config(tmp_path, **values):
    return load_config(out=str(tmp_path / "run"), backbone__name="mlp", backbone__width=0.1, data__train_per_task=200,
                       data__test_per_task=50, train__iterations=4, train__batch_size=32, **values)


def _rows(directory):
    with open(directory / "steps.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_steps_csv_has_every_step_of_every_fit_and_tensorboard_the_same(tmp_path):
    result = run(_config(tmp_path, logging__tensorboard=True))
    rows = _rows(result.directory)
    phases = {}
    for row in rows:
        phases.setdefault((row["task"], row["phase"]), []).append(row)
    assert list(phases)[:4] == [("task1", "reference"), ("task2", "probe"), ("task2", "adapter"), ("task3", "probe")]
    assert len(phases) == 1 + 2 * 4  # the reference fit, then a probe and an adapter fit per later task
    config = result.metrics
    for (task, phase), steps in phases.items():
        assert [int(s["step"]) for s in steps] == list(range(1, len(steps) + 1))
        assert all(math.isfinite(float(s["loss"])) for s in steps)
        seconds = [float(s["seconds"]) for s in steps]
        assert seconds == sorted(seconds)
        if phase != "probe":
            assert len(steps) == 4  # train.iterations
        assert {float(s["lr"]) for s in steps} == {0.003 if phase == "adapter" else 0.001}
    assert "steps.csv" in json.loads((result.directory / "manifest.json").read_text())["files"]
    assert config["status"] == "complete"

    events = EventAccumulator(str(result.directory / "tensorboard")).Reload()
    losses = events.Scalars("task2/adapter/loss")
    assert [round(e.value, 4) for e in losses] == [round(float(s["loss"]), 4) for s in phases[("task2", "adapter")]]
    accuracy = events.Scalars("accuracy/task-il")
    assert [e.step for e in accuracy] == [1, 2, 3, 4, 5]
    assert accuracy[-1].value == pytest.approx(result.metrics["scenarios"]["task-il"]["average_accuracy"], abs=1e-4)


@pytest.mark.slow
def test_rollback_keeps_the_steps_of_the_tasks_it_keeps(tmp_path):
    result = run(_config(tmp_path, method="finetune"))
    assert {r["task"] for r in _rows(result.directory)} == {f"task{k}" for k in range(1, 6)}
    assert {r["phase"] for r in _rows(result.directory)} == {"finetune"}
    rollback(result.directory, 2)
    assert {r["task"] for r in _rows(result.directory)} == {"task1", "task2"}


def test_tensorboard_without_its_package_is_a_clear_error_before_anything_is_written(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'pearl-cl\[tensorboard\]'"):
        run(_config(tmp_path, logging__tensorboard=True))
    assert not (tmp_path / "run").exists()
