"""Operations on real runs: kill and resume, rollback, the validation guard, predict, inspect,
export, and every bad input the operations issue names."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import small_config
from pearl_cl.commands import cli
from pearl_cl.backbones import build_backbone
from pearl_cl.config import save_config
from pearl_cl.errors import PearlError, TrainingError
from pearl_cl.engine.restore import load_learner, open_run
from pearl_cl.engine.operations import resume, rollback
from pearl_cl.engine.runner import benchmark_for, run

pytestmark = pytest.mark.slow  # trains several tasks or spawns processes; make test-fast leaves it out

SETTINGS = {"backbone.width": 0.25, "data.train_per_task": 600, "data.test_per_task": 200, "train.batch_size": 32,
            "pearl.r_max": 4, "pearl.epsilon": 0.05, "train.epochs": 2}


def _config(out: Path, **extra):
    values = {k.replace(".", "__"): v for k, v in SETTINGS.items()}
    return small_config(out.parent, out=str(out), **{**values, **extra})


def _matrices(directory: Path) -> dict[str, str]:
    """Every accuracy matrix, the routing matrix and the ranks of a run directory, as text."""
    names = sorted(p.name for p in directory.glob("accuracy_matrix_*.csv"))
    assert "accuracy_matrix_task-il.csv" in names and len(names) >= 2
    return {name: (directory / name).read_text() for name in (*names, "routing_accuracy.csv", "ranks.csv")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted PEARL run of all five tasks."""
    out = tmp_path_factory.mktemp("ops") / "full"
    return run(_config(out))


def _progress(directory: Path) -> int:
    try:
        return json.loads((directory / "progress.json").read_text())["tasks_learned"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_run_killed_mid_task_resumes_to_the_uninterrupted_result(finished, tmp_path):
    out = tmp_path / "killed"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(save_config(_config(out)))  # the same config as the uninterrupted run
    log = tmp_path / "child.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "pearl_cl.commands.cli", "run", "--config", str(config_file)],
                                stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.time() + 900  # generous: a loaded machine is slow, and the kill point below does not depend on it
        while _progress(out) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # task 2 has just been committed: task 3 (probe, training, evaluation, writes) is under way
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    learned = _progress(out)
    assert 2 <= learned < 5, f"the kill landed after {learned} tasks; it must interrupt the run: {log.read_text()[-2000:]}"
    result = resume(out)
    assert result.metrics["status"] == "complete"
    assert _matrices(out) == _matrices(finished.directory)
    assert result.metrics["scenarios"] == finished.metrics["scenarios"]
    assert open_run(out).store.verify() == []


def test_rollback_then_resume_reproduces_the_uninterrupted_run(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished.directory, copy)
    rolled = rollback(copy, 2)
    assert [r.task for r in rolled.records] == ["task1", "task2"]
    assert sorted(p.name for p in (copy / "tasks").iterdir()) == ["task1.safetensors", "task2.safetensors"]
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["status"].startswith("incomplete: 2 of 5") and metrics["tasks_learned"] == 2
    assert (copy / "accuracy_matrix_task-il.csv").read_text().splitlines()[-1].startswith("task2,")
    assert open_run(copy).store.verify() == []
    resumed = resume(copy)
    assert _matrices(copy) == _matrices(finished.directory)
    assert resumed.metrics["scenarios"] == finished.metrics["scenarios"]


def test_a_nan_task_is_rolled_back_and_the_earlier_task_is_untouched(tmp_path):
    out = tmp_path / "nan"
    config = _config(out, train__adapter_lr=1e30)  # the reference trains; every adapter diverges
    with pytest.raises(TrainingError, match=r"task2 failed and was rolled back: .*loss became .*retry with ranks x2 failed"):
        run(config)
    assert not (out / "tasks" / "task2.safetensors").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed at task2: 1 of 5 tasks learned"
    opened = open_run(out)
    assert opened.progress.learned == 1 and opened.store.verify() == []
    bench = benchmark_for(opened.config)
    learner = load_learner(opened.config, bench, opened.store, opened.progress)
    assert [r.task for r in learner.records] == ["task1"]
    task = bench.tasks[0]  # the reloaded task-1 branch predicts exactly what was measured after task 1
    assert learner.count_correct(task.name, task.test_x, task.test_y) == opened.progress.correct["task-il"][0, 0]


def test_validation_floor_stops_a_method_without_ranks_at_once(tmp_path):
    out = tmp_path / "floor"
    config = _config(out, method="finetune", backbone__name="mlp", guard__min_val_accuracy=100.0, train__iterations=1)
    with pytest.raises(TrainingError) as caught:
        run(config)
    match = re.match(r"task(\d) failed and was rolled back: validation accuracy [\d.]+% is below "
                     r"guard.min_val_accuracy=100\. .* keeps the (\d) task", str(caught.value))
    assert match, caught.value
    assert int(match.group(2)) == int(match.group(1)) - 1 and "retry" not in str(caught.value)
    assert json.loads((out / "progress.json").read_text())["tasks_learned"] == int(match.group(2))


def test_exported_peft_adapter_reproduces_our_predictions(finished, tmp_path):
    from peft import PeftModel

    target = tmp_path / "export"
    assert cli.main(["export", str(finished.directory), "--task", "3", "--out", str(target)]) == 0
    info = json.loads((target / "export.json").read_text())
    base = build_backbone(info["backbone"]["name"], tuple(info["backbone"]["image_shape"]), info["backbone"]["width"])
    base.load_state_dict(load_file(target / "backbone.safetensors"))
    model = PeftModel.from_pretrained(base, str(target), adapter_name="task3").eval()
    head = torch.nn.Linear(model.get_base_model().feature_dim, len(info["classes"]))
    head.load_state_dict(load_file(target / "head.safetensors"))
    opened = open_run(finished.directory)
    bench = benchmark_for(opened.config)
    learner = load_learner(opened.config, bench, opened.store, opened.progress)
    x = bench.tasks[2].test_x[:]
    with torch.no_grad():
        ours = learner.predict(x, "task3")[0]
        theirs = torch.tensor(info["classes"])[head(model(x)).argmax(1)]
    assert torch.equal(ours, theirs)
    assert (ours == bench.tasks[2].test_labels).float().mean() > 0.9


def test_export_refuses_the_reference_task_and_an_existing_directory(finished, tmp_path, capsys):
    assert cli.main(["export", str(finished.directory), "--task", "1", "--out", str(tmp_path / "e")]) == 2
    assert "task1 is the reference task" in capsys.readouterr().err
    assert cli.main(["export", str(finished.directory), "--task", "2", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_predict_and_inspect_on_a_saved_run(finished, tmp_path, capsys):
    bench = benchmark_for(open_run(finished.directory).config)
    task = bench.tasks[1]
    raw = ((task.test_x[:2, 0] * 0.3081 + 0.1307) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    paths = [_png(tmp_path / "a.png", raw[0]), tmp_path / "b.npy"]
    np.save(paths[1], raw[1])
    assert cli.main(["predict", str(finished.directory), *map(str, paths), "--task", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    opened = open_run(finished.directory)
    learner = load_learner(opened.config, bench, opened.store, opened.progress)
    expected = learner.predict(task.test_x[:2], "task2")[0].tolist()  # the 8-bit round trip changes nothing here
    assert [line.split("\t")[1] for line in lines] == [f"class {c}" for c in expected]
    assert all("task task2" in line and "confidence" in line for line in lines)
    assert cli.main(["predict", str(finished.directory), str(paths[0])]) == 0
    assert "task task" in capsys.readouterr().out
    assert cli.main(["inspect", str(finished.directory)]) == 0
    out = capsys.readouterr().out
    for text in ("layer: rank (proximity)", "params added", "every file matches manifest.json", "task5"):
        assert text in out


def test_flipped_bytes_in_an_adapter_file_fail_the_checksum(finished, tmp_path, capsys):
    copy = tmp_path / "corrupt"
    shutil.copytree(finished.directory, copy)
    path = copy / "tasks" / "task3.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    np.save(tmp_path / "x.npy", np.zeros((28, 28), dtype=np.uint8))
    assert cli.main(["predict", str(copy), str(tmp_path / "x.npy")]) == 2
    assert f"{path} is corrupt, or its entry in manifest.json is: their SHA-256 differ" in capsys.readouterr().err
    assert cli.main(["inspect", str(copy)]) == 1  # a health check fails
    assert "CORRUPT OR MISSING: tasks/task3.safetensors" in capsys.readouterr().out
    with pytest.raises(PearlError, match="is corrupt"):
        rollback(copy, 4)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(PearlError, match="task3.safetensors is corrupt"):
        resume(copy)


@pytest.mark.parametrize("write, message", [
    (lambda p: _png(p / "rgb.png", np.zeros((28, 28, 3), dtype=np.uint8)), "has 3 channel(s); this run's benchmark takes grayscale 28x28"),
    (lambda p: _png(p / "big.png", np.zeros((32, 32), dtype=np.uint8)), "is 32x32 pixels; this run's benchmark takes 28x28: resize"),
    (lambda p: (np.save(p / "f.npy", np.full((28, 28), 3.0)), p / "f.npy")[1], "outside [0, 1]; give uint8"),
    (lambda p: (p / "x.gif").write_bytes(b"GIF89a") and p / "x.gif", "unknown image format '.gif'"),
    (lambda p: (p / "broken.png").write_bytes(b"not a png") and p / "broken.png", "cannot read image"),
    (lambda p: p / "missing.png", "missing.png: no such file"),
    (lambda p: (np.save(p / "i.npy", np.zeros((28, 28), dtype=np.int64)), p / "i.npy")[1], "dtype int64; give uint8"),
    (lambda p: _png(p / "la.png", np.zeros((28, 28, 2), dtype=np.uint8)), "its mode is LA; save it as 8-bit grayscale"),
])
def test_bad_images_name_the_file_and_the_fix(finished, tmp_path, capsys, write, message):
    path = write(tmp_path)
    assert cli.main(["predict", str(finished.directory), str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err


def test_resume_with_a_different_config_names_the_keys(finished, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished.directory, copy)
    before = {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert cli.main(["run", "--resume", str(copy), "--set", "train.lr=0.5", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: stored 0.001, asked 0.5" in err and "seed: stored 0, asked 3" in err
    assert {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    assert cli.main(["run", "--resume", str(copy), "--config", "x.yaml"]) == 2
    assert "drop --config" in capsys.readouterr().err
    assert cli.main(["run", "--resume", str(tmp_path)]) == 2
    assert "is not a pearl-cl run directory" in capsys.readouterr().err
    for bad in ("9", "5", "0"):
        assert cli.main(["rollback", str(copy), "--to-task", bad]) == 2
        assert "--to-task must be between 1 and 4" in capsys.readouterr().err


@pytest.mark.parametrize("tasks, message", [
    ("[[0, 1], [1, 2]]", "class 1 is in task 1 and task 2; class-incremental tasks need disjoint classes"),
    ("[[0, 1], [10]]", "class 10 of task 2 is not a label of mnist (0 to 9)"),
    ("[[0, 1], []]", "task 2 lists no classes"),
])
def test_user_defined_benchmark_with_bad_tasks_is_rejected_before_anything_is_written(tmp_path, capsys, tasks, message):
    bench = tmp_path / "mine.yaml"
    bench.write_text(f"dataset: mnist\ntasks: {tasks}\n")
    assert cli.main(["run", "--benchmark", str(bench), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_user_defined_benchmark_runs(tmp_path):
    bench = tmp_path / "three.yaml"
    bench.write_text("dataset: mnist\ntasks: [[3, 5, 8], [0, 6]]\n")
    result = run(_config(tmp_path / "run", benchmark=str(bench), backbone__name="mlp"))
    assert [r.classes for r in result.records] == [(3, 5, 8), (0, 6)]
    assert result.metrics["scenarios"]["task-il"]["average_accuracy"] > 80.0
    before = _matrices(result.directory)
    bench.write_text("dataset: mnist\ntasks: [[1, 2], [4]]\n")  # the original changes: the run keeps its own copy
    rolled = rollback(result.directory, 1)
    assert [r.classes for r in rolled.records] == [(3, 5, 8)]
    assert [r.classes for r in resume(result.directory).records] == [(3, 5, 8), (0, 6)]
    assert _matrices(result.directory) == before


def test_unwritable_output_directory_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["run", "--out", str(blocker / "run"), "--set", "data.train_per_task=50"]) == 2
    assert f"cannot create run directory {blocker / 'run'}" in capsys.readouterr().err
    assert blocker.read_text() == ""


@pytest.mark.parametrize("method, values", [("finetune", {}), ("joint", {}), ("ewc", {}), ("online-ewc", {}), ("si", {}),
                                            ("lwf", {"scenario": "task-il", "lwf__variant": "van-de-ven"}),
                                            ("finetune", {"scenario": "domain-il"}), ("inflora", {}),
                                            ("separate", {}), ("lora", {}),
                                            ("pearl", {"pearl__rank_rule": "budget", "pearl__init": "zero"})])
def test_every_method_resumes_from_its_saved_state_to_the_same_numbers(method, values, tmp_path):
    """Rollback to task 2, then resume: the restored state (EWC's Fisher, SI's importances, LwF's
    old network, Joint's data, InfLoRA's subspaces, the optimiser carried across tasks, Separate's
    networks, LoRA's adapters, the budget rule's baseline) gives the uninterrupted run, forward
    transfer included."""
    full = run(_config(tmp_path / "full", method=method, backbone__name="mlp", train__epochs=1, train__reference_epochs=1,
                       **values))
    copy = tmp_path / "copy"
    shutil.copytree(full.directory, copy)
    rollback(copy, 2)
    resumed = resume(copy)
    assert _matrices(copy) == _matrices(full.directory)
    assert resumed.metrics["scenarios"] == full.metrics["scenarios"]


def test_a_stop_between_progress_and_its_manifest_update_reads_as_intact(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished.directory, copy)
    rollback(copy, 3)
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = manifest["files"]["progress.json"]
    entry["next"], entry["sha256"] = entry["sha256"], "0" * 64  # as if stopped right after progress.json's rename
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert open_run(copy).progress.learned == 3  # the announced digest reads as intact
    (copy / "metrics.json").write_text("{")  # and a derived file half-written by something else
    resume(copy)
    assert _matrices(copy) == _matrices(finished.directory)
    assert open_run(copy).store.verify() == []


def test_a_stop_of_an_older_version_between_progress_and_manifest_is_repaired_on_resume(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished.directory, copy)
    rollback(copy, 3)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["progress.json"]["sha256"] = "0" * 64  # pearl-cl 0.2 announced nothing before a rename
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PearlError, match="progress.json is corrupt"):
        open_run(copy)  # a reader does not repair
    resume(copy)  # the writer adopts it: its own checksum holds
    assert _matrices(copy) == _matrices(finished.directory)


def test_a_corrupt_progress_or_manifest_is_named(finished, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished.directory, copy)
    progress = copy / "progress.json"
    progress.write_text(progress.read_text().replace('"tasks_learned": 5', '"tasks_learned": 4'))
    assert cli.main(["run", "--resume", str(copy)]) == 2  # still JSON, but not what the manifest lists
    assert f"{progress} is corrupt, or its entry in manifest.json is" in capsys.readouterr().err
    (copy / "manifest.json").write_text("[]")
    assert cli.main(["inspect", str(copy)]) == 2
    assert "manifest.json is unreadable or not a manifest" in capsys.readouterr().err
