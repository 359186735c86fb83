"""One writer per run directory (engine/lock.py): a second writer is refused with the holder named,
and a lock left by a killed process is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pearl_cl.commands.cli import main
from pearl_cl.engine.lock import LOCK, OWNER

TINY = ["--set", "backbone.name=mlp", "--set", "backbone.width=0.1", "--set", "data.train_per_task=60",
        "--set", "data.test_per_task=20", "--set", "train.iterations=3"]


def _hold(directory) -> subprocess.Popen:
    """A process that holds ``directory``'s write lock until it is killed."""
    code = ("import sys, time; from pathlib import Path; from pearl_cl.engine.lock import writing\n"
            "with writing(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.name not in (LOCK, OWNER)}


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_holder_frees_the_lock(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", *TINY, "--out", str(run)]) == 0
    assert main(["rollback", str(run), "--to-task", "2"]) == 0
    before = _files(run)
    holder = _hold(run)
    try:
        capsys.readouterr()
        for argv in (["run", "--resume", str(run)], ["rollback", str(run), "--to-task", "1"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"is being written by process {holder.pid} on " in err and "Traceback" not in err
        assert _files(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["run", "--resume", str(run)]) == 0  # the killed holder's lock is free
    assert '"tasks_learned": 5' in (run / "metrics.json").read_text()


def test_a_run_waits_for_no_one_but_refuses_a_directory_another_run_is_writing(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = _hold(run)
    try:
        assert main(["run", *TINY, "--out", str(run)]) == 2
        assert f"is being written by process {holder.pid}" in capsys.readouterr().err
        assert sorted(os.listdir(run)) == sorted([LOCK, OWNER])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["run", *TINY, "--out", str(run)]) == 0  # a directory holding only a dead lock counts as new
    assert (run / "metrics.json").is_file()
