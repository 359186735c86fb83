"""A whole PEARL run on a real MNIST subset: files on disk, accuracy, and reproducibility."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from pearl_cl import PearlError, load_config, run
from pearl_cl.registry import ROUTERS
from pearl_cl.routers.statistics import TaskStatistics
from pearl_cl.engine.store import RunStore

from conftest import small_config

pytestmark = pytest.mark.slow  # trains several tasks or spawns processes; make test-fast leaves it out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return run(small_config(tmp_path_factory.mktemp("e2e")))


def test_run_directory_holds_every_file(finished):
    root = finished.directory
    expected = ["config.yaml", "metrics.json", "accuracy_matrix_task-il.csv", "accuracy_matrix_domain-il.csv",
                "accuracy_matrix_class-il.csv", "routing_accuracy.csv", "ranks.csv", "tasks.csv", "steps.csv", "progress.json", "manifest.json", "data.json"]
    expected += [f"tasks/task{i}.safetensors" for i in range(1, 6)]
    for name in expected:
        assert (root / name).is_file(), name
    store = RunStore(root)
    assert store.verify() == []
    assert set(store.files) == set(expected) - {"manifest.json"}


def test_task_il_accuracy_beats_chance_without_forgetting(finished):
    scores = json.loads((finished.directory / "metrics.json").read_text())["scenarios"]["task-il"]
    assert scores["average_accuracy"] >= 90.0  # chance is 50% on two-class tasks
    assert scores["forgetting"] == 0.0 and scores["bwt"] == 0.0
    acc = np.genfromtxt(finished.directory / "accuracy_matrix_task-il.csv", delimiter=",", skip_header=1)[:, 1:]
    np.testing.assert_allclose(acc, finished.accuracy["task-il"], atol=1e-4, equal_nan=True)


def test_class_il_is_reported_with_routing_accuracy(finished):
    m = json.loads((finished.directory / "metrics.json").read_text())
    class_il, routing = m["scenarios"]["class-il"], m["routing"]
    assert routing["router"] == ROUTERS.default() and routing["scenario"] == "class-il"
    # a class is right only when its task was chosen: Class-IL never exceeds routing or Task-IL
    final = finished.accuracy["class-il"][-1]
    assert (final <= finished.routing[-1] + 1e-9).all() and (final <= finished.accuracy["task-il"][-1] + 1e-9).all()
    assert 20.0 < routing["accuracy"] <= 100.0  # five tasks: chance routing is 20%
    assert class_il["average_accuracy"] == pytest.approx(float(np.mean(final)))
    stats = TaskStatistics.from_tensors(load_file(finished.directory / "tasks" / "task4.safetensors"))
    assert set(stats.routers) == {ROUTERS.default()}  # the run's router only (routing.fit_all=false)
    assert all(kept["means"].shape[0] == 2 for kept in stats.routers.values())  # one row per class


def test_ranks_csv_matches_adapter_files(finished):
    rows = list(csv.DictReader((finished.directory / "ranks.csv").open()))
    assert {r["task"] for r in rows} == {"task2", "task3", "task4", "task5"}
    assert any(int(r["rank"]) > 0 for r in rows if r["task"] == "task3")
    for row in rows:
        assert 0 <= int(row["rank"]) <= 4 and float(row["proximity"]) >= 0
        assert int(row["parameters"]) == int(row["rank"]) * (int(row["rows"]) + int(row["cols"]))
    tensors = load_file(finished.directory / "tasks" / "task3.safetensors")
    for row in (r for r in rows if r["task"] == "task3"):
        key = f"adapter.base_model.model.{row['layer']}.lora_A.weight"
        if int(row["rank"]) == 0:
            assert key not in tensors
        else:
            assert tensors[key].shape[0] == int(row["rank"])
    assert tensors["head.weight"].shape[0] == 2
    reference = load_file(finished.directory / "tasks" / "task1.safetensors")
    assert any(k.startswith("backbone.layer4") for k in reference)


def test_parameters_added_are_reported_per_task(finished):
    m = json.loads((finished.directory / "metrics.json").read_text())
    per_task = m["parameters_added_per_task"]
    assert [p["task"] for p in per_task] == [f"task{i}" for i in range(1, 6)]
    later = per_task[1:]
    assert all(p["total"] == p["adapter"] + p["norm"] + p["head"] for p in later)
    assert m["parameters_added_after_reference"]["count"] == sum(p["total"] for p in later)
    assert all(s["total"] > 0 for s in m["seconds_per_task"]) and m["peak_memory_bytes"] > 0


def test_saved_config_reloads_to_the_same_config(finished):
    reloaded = load_config(finished.directory / "config.yaml")
    assert reloaded.to_dict() == small_config(finished.directory.parent).to_dict()
    assert reloaded.pearl.r_max == 4 and reloaded.backbone.width == 0.25


def test_same_config_and_seed_give_identical_results(finished, tmp_path):
    again = run(small_config(tmp_path))
    for scenario in ("task-il", "class-il"):
        np.testing.assert_array_equal(again.accuracy[scenario], finished.accuracy[scenario])
    first, second = RunStore(finished.directory).files, RunStore(again.directory).files
    for i in range(1, 6):  # every saved adapter is bitwise the same
        name = f"tasks/task{i}.safetensors"
        assert first[name]["sha256"] == second[name]["sha256"], name
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (finished.directory, again.directory))
    assert m1["scenarios"] == m2["scenarios"] and m1["parameters_added_per_task"] == m2["parameters_added_per_task"]


def test_existing_run_directory_is_not_overwritten(finished):
    before = (finished.directory / "metrics.json").read_bytes()
    with pytest.raises(PearlError, match="already exists"):
        run(load_config(out=str(finished.directory)))
    assert (finished.directory / "metrics.json").read_bytes() == before


def test_gradient_probe_run_on_mlp(tmp_path):
    result = run(small_config(tmp_path, backbone__name="mlp", backbone__width=0.5, pearl__probe="gradient",
                              pearl__rank_rule="energy", pearl__tau=0.5))
    assert result.metrics["scenarios"]["task-il"]["average_accuracy"] >= 90.0
    ranks = [r.ranks for r in result.records[1:]]
    assert all(set(r) == {"fc1", "fc2"} for r in ranks)
    assert all(1 <= lr.rank <= 4 and lr.proximity > 0 for r in ranks for lr in r.values())
