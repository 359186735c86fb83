"""Data-parallel runs under torchrun on CPU (gloo, 2 processes): the same numbers as one process,
one run directory, resume, and a failure in one process ending all of them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pearl_cl.commands import cli

pytestmark = pytest.mark.slow  # trains several tasks or spawns processes; make test-fast leaves it out

TINY = ["--set", "backbone.name=mlp", "--set", "backbone.width=0.25", "--set", "data.train_per_task=400",
        "--set", "data.test_per_task=200", "--set", "train.epochs=2", "--set", "train.reference_epochs=2",
        "--set", "pearl.epsilon=0.05", "--set", "pearl.r_max=4"]
TOLERANCE_PP = 1.0  # accuracies of 1 and 2 processes may differ by float summation order only


def torchrun(processes: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=processes -m pearl_cl ARGS``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "pearl_cl", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _ranks(directory: Path) -> list[tuple[str, str, str]]:
    with open(directory / "ranks.csv") as handle:
        return [(row["task"], row["layer"], row["rank"]) for row in csv.DictReader(handle)]


def _matrix(directory: Path, name: str) -> np.ndarray:
    with open(directory / f"accuracy_matrix_{name}.csv") as handle:
        rows = list(csv.reader(handle))[1:]
    return np.array([[float(v) if v else np.nan for v in row[1:]] for row in rows])


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The same PEARL run under torchrun with 1 and with 2 processes."""
    root = tmp_path_factory.mktemp("ddp")
    for n in (1, 2):
        done = torchrun(n, "run", *TINY, "--out", str(root / f"p{n}"))
        assert done.returncode == 0, done.stderr[-3000:]
    return root, root / "p1", root / "p2"


def test_two_processes_give_the_ranks_and_accuracies_of_one(pair):
    root, one, two = pair
    assert _ranks(one) == _ranks(two) and any(int(r) > 0 for _, _, r in _ranks(two))
    for scenario in ("task-il", "class-il"):
        a, b = _matrix(one, scenario), _matrix(two, scenario)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.nanmax(np.abs(a - b)) <= TOLERANCE_PP, (scenario, a, b)
    assert json.loads((two / "metrics.json").read_text())["processes"] == 2
    assert json.loads((one / "metrics.json").read_text())["processes"] == 1
    assert sorted(p.name for p in root.iterdir()) == ["p1", "p2"]  # exactly one directory per run


def test_two_process_run_resumes_to_its_own_numbers(pair, tmp_path):
    _, _, two = pair
    before = {name: (two / name).read_text() for name in ("accuracy_matrix_task-il.csv", "ranks.csv")}
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(two), str(copy)], check=True)
    assert cli.main(["rollback", str(copy), "--to-task", "2"]) == 0
    done = torchrun(2, "run", "--resume", str(copy))
    assert done.returncode == 0, done.stderr[-3000:]
    assert {name: (copy / name).read_text() for name in before} == before
    assert cli.main(["inspect", str(copy)]) == 0


def test_a_failure_in_one_process_ends_all_with_its_message(tmp_path):
    """Only process 0 creates the run directory, so only it fails here; process 1 waits for it
    in the first gradient exchange until torchrun stops it."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = torchrun(2, "run", *TINY, "--out", str(blocker / "run"), timeout=180)
    assert done.returncode != 0
    assert "pearl-cl: error (process 0 of 2): cannot create run directory" in done.stderr
    assert blocker.read_text() == ""


def test_batch_size_must_split_evenly_over_processes(tmp_path):
    done = torchrun(2, "run", *TINY, "--set", "train.batch_size=63", "--out", str(tmp_path / "run"), timeout=180)
    assert done.returncode != 0 and "train.batch_size=63 is not a multiple of the 2 processes" in done.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


SYNC_SCRIPT = """
import sys
import torch
from torch import nn
from pearl_cl.learning import distributed

distributed.initialise()
r = distributed.rank()
net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
with torch.no_grad():
    net[0].weight.fill_(r + 1.0)
    net[1].running_mean.fill_(2.0 * r)
    net[1].running_var.fill_(1.0 + r)
    net[1].num_batches_tracked.fill_(10 + r)
distributed.sync_module(net)
values = [r, net[0].weight[0, 0].item(), net[1].running_mean[0].item(), net[1].running_var[0].item(),
          int(net[1].num_batches_tracked)]
open(f"{sys.argv[1]}/result{r}.txt", "w").write(" ".join(map(str, values)))
distributed.shutdown()
"""


def test_sync_module_takes_process_0s_weights_and_averages_batchnorm_statistics(tmp_path):
    script = tmp_path / "sync.py"
    script.write_text(SYNC_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                           str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [(tmp_path / f"result{r}.txt").read_text().split() for r in (0, 1)]
    # weights and the step counter from process 0; running mean (0 + 2) / 2, running variance (1 + 2) / 2
    assert results == [["0", "1.0", "1.0", "1.5", "10"], ["1", "1.0", "1.0", "1.5", "10"]]
