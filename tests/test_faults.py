"""Faults while writing a run directory: a full disk, an I/O error, a killed writer's leftovers,
a start killed before its config.yaml, and the SIGKILL sweep of benchmarks/fault_sweep.py."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pearl_cl.commands import cli
from pearl_cl.config import load_config
from pearl_cl.engine import store as store_module
from pearl_cl.engine.lock import writing
from pearl_cl.engine.operations import inspect, resume
from pearl_cl.engine.restore import open_run
from pearl_cl.engine.runner import run
from pearl_cl.engine.store import RunStore, write_failure
from pearl_cl.errors import PearlError

from test_bad_inputs import TINY

ROOT = Path(__file__).resolve().parents[1]


def _figures(directory: Path) -> dict:
    metrics = json.loads((directory / "metrics.json").read_text())
    keys = ("scenarios", "routing", "parameters_added_per_task", "validation_accuracy", "train_loss")
    return {k: metrics[k] for k in keys} | {"ranks": (directory / "ranks.csv").read_text()}


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_a_clear_error_and_it_resumes_once_space_is_back(tmp_path, monkeypatch, capsys):
    whole = run(load_config(out=str(tmp_path / "whole"), **TINY))
    calls = {"n": 0}
    real_fsync = os.fsync

    def full_after_120(fd):  # the disk fills up part-way through the run (about task 3 of 5)
        calls["n"] += 1
        if calls["n"] > 120:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", full_after_120)
    directory = tmp_path / "full"
    argv = ["run", "--out", str(directory), *[f"--set={k.replace('__', '.')}={v}" for k, v in TINY.items()]]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no space left on the disk of {directory}" in err and "run --resume" in err
    monkeypatch.setattr(store_module.os, "fsync", real_fsync)  # space is back

    result, bad = inspect(directory)
    assert bad == [] and 0 < len(result.records) < 5  # valid, with the tasks finished before the disk filled
    assert not list(directory.rglob(".*.tmp"))
    resume(directory)
    assert _figures(directory) == _figures(whole.directory)


def test_write_failures_name_free_space_the_disk_or_the_permissions(tmp_path):
    target = tmp_path / "metrics.json"
    full = str(write_failure(target, OSError(errno.ENOSPC, "No space left on device"), tmp_path))
    broken = str(write_failure(target, OSError(errno.EIO, "Input/output error"), tmp_path))
    denied = str(write_failure(target, PermissionError(errno.EACCES, "Permission denied"), tmp_path))
    assert "no space left on the disk" in full and "free space" in full and f"--resume {tmp_path}" in full
    assert "I/O error" in broken and "check the disk" in broken
    assert "Permission denied" in denied and "writable" in denied


FSYNCS_PER_WRITE = 6  # the announce, the file and the manifest's update: each a file and its folder


@pytest.mark.parametrize("failing", range(1, FSYNCS_PER_WRITE + 1))
@pytest.mark.parametrize("exists", [True, False], ids=["rewrite", "first write"])
def test_a_write_that_fails_at_any_fsync_leaves_a_valid_directory(tmp_path, monkeypatch, failing, exists):
    store = RunStore(tmp_path)
    store.write_text("other.txt", "kept")
    if exists:
        store.write_text("a.txt", "first")
    calls = {"n": 0}
    real_fsync = os.fsync

    def full_from_here(fd):
        calls["n"] += 1
        if calls["n"] >= failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", full_from_here)
    with pytest.raises(PearlError, match="no space left"):
        store.write_text("a.txt", "second")
    monkeypatch.undo()  # space is back
    after = RunStore(tmp_path)
    assert after.verify() == [] and not list(tmp_path.glob(".*.tmp"))
    on_disk = (tmp_path / "a.txt").read_text() if (tmp_path / "a.txt").exists() else None
    assert on_disk in (("first", "second") if exists else (None, "second"))
    if on_disk is not None:
        assert after.read_verified("a.txt").decode() == on_disk
    with writing(tmp_path):  # the next writer settles the manifest and removes temporaries
        RunStore(tmp_path).settle()
    settled = RunStore(tmp_path)
    assert settled.verify() == [] and not list(tmp_path.glob(".*.tmp"))
    assert all("next" not in entry for entry in settled.files.values())
    assert settled.read_verified("other.txt") == b"kept"


def test_taking_the_lock_removes_a_killed_writers_temporary_files(tmp_path):
    store = RunStore(tmp_path)
    store.write_text("tasks/a.txt", "kept")
    left = [tmp_path / ".metrics.json.x1.tmp", tmp_path / "tasks" / ".task2.safetensors.x2.tmp"]
    for path in left:
        path.write_text("half")
    with writing(tmp_path):
        assert not any(path.exists() for path in left)
    assert (tmp_path / "tasks" / "a.txt").read_text() == "kept"


def test_a_start_killed_before_its_config_is_started_again(tmp_path, capsys):
    directory = tmp_path / "run"
    store = RunStore(directory)  # what a run on a benchmark file killed during config.yaml's write leaves
    store.write_text("benchmark.yaml", "dataset: mnist\ntasks: [[0, 1], [2, 3]]\n")
    store.files["config.yaml"] = {"next": "0" * 64}
    store._write_manifest()
    (directory / ".config.yaml.x1.tmp").write_text("half")
    config = load_config(out=str(directory), data__train_per_task=60, data__test_per_task=20, backbone__name="mlp",
                         train__iterations=2, routing__sample=20, routing__random_features=16)
    result = run(config)  # split-mnist, not the killed start's benchmark file
    assert len(result.records) == 5 and RunStore(directory).verify() == []
    assert not list(directory.rglob(".*.tmp")) and not (directory / "benchmark.yaml").exists()
    assert open_run(directory).config.benchmark == "split-mnist"


@pytest.mark.slow
def test_the_kill_sweep_resumes_to_identical_results():
    swept = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_sweep.py"), "moments=3"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert "3/3 identical to the uninterrupted run, no temporary file left" in swept.stdout


def test_a_reader_that_meets_a_file_newer_than_its_manifest_reads_the_manifest_again(tmp_path):
    RunStore(tmp_path).write_text("a.txt", "first")
    reader = RunStore(tmp_path)  # its manifest lists "first"
    RunStore(tmp_path).write_text("a.txt", "second")  # a writer goes on
    assert reader.read_verified("a.txt") == b"second" and reader.verify() == []
    (tmp_path / "a.txt").write_text("damaged")
    with pytest.raises(PearlError, match="a.txt is corrupt"):
        reader.read_verified("a.txt")
