"""Run a method over a benchmark and write the run directory (DESIGN.md §6); the library entry point.

Our design. :func:`run` validates the config, loads the benchmark, learns the tasks in order,
evaluates Task-IL accuracy on every task seen after each task, and writes after every task:
``config.yaml``, ``metrics.json``, ``accuracy_matrix_task-il.csv``, ``ranks.csv``, ``tasks.csv``
and ``tasks/<task>.safetensors``, all listed with checksums in ``manifest.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pearl_cl import metrics
from pearl_cl.adapters import INITS
from pearl_cl.backbones import BACKBONES
from pearl_cl.config import RunConfig, save_config
from pearl_cl.data.benchmarks import BENCHMARKS, Benchmark, make_benchmark
from pearl_cl.errors import ConfigError, PearlError
from pearl_cl.methods import METHODS, TaskRecord
from pearl_cl.probe import PROBES
from pearl_cl.rank import RankRule
from pearl_cl.store import RunStore
from pearl_cl.training import FitSettings

SCENARIO = "task-il"


def check(config: RunConfig) -> None:
    """Reject an invalid config before any data is loaded or any model trained.

    Raises:
        ConfigError: names the key, the bad value and the valid choices.
    """
    choices = {
        "benchmark": (config.benchmark, sorted(BENCHMARKS)),
        "method": (config.method, sorted(METHODS)),
        "backbone.name": (config.backbone.name, list(BACKBONES)),
        "pearl.probe": (config.pearl.probe, list(PROBES)),
        "pearl.init": (config.pearl.init, list(INITS)),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"unknown {key} {value!r}; choose one of: {', '.join(allowed)}")
    p, t = config.pearl, config.train
    RankRule(p.rank_rule, p.r_min, p.r_max, p.epsilon, p.tau, p.fixed_rank)
    for epochs, lr in ((t.reference_epochs, t.lr), (t.epochs, t.adapter_lr), (p.probe_epochs, t.lr)):
        FitSettings(epochs, t.batch_size, lr, t.optimizer, t.weight_decay, t.momentum)
    if config.backbone.width <= 0:
        raise ConfigError(f"backbone.width must be > 0, got {config.backbone.width}")


@dataclass
class RunResult:
    """A finished run: its directory, the ``(T, T)`` Task-IL accuracy matrix (%), the task
    records and ``metrics`` (the content of ``metrics.json``)."""

    directory: Path
    accuracy: np.ndarray
    records: list[TaskRecord]
    metrics: dict[str, Any]


def default_run_dir(config: RunConfig) -> Path:
    """``runs/<benchmark>-<method>-seed<seed>-<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.benchmark}-{config.method}-seed{config.seed}-{stamp}"


def _task_seed(config: RunConfig, index: int) -> int:
    return config.seed * 1000 + index


def _metrics_json(config: RunConfig, bench: Benchmark, acc: np.ndarray, records: list[TaskRecord],
                  backbone_params: int, seconds: list[float]) -> dict[str, Any]:
    added = [r.parameters["total"] for r in records if not r.reference]
    return {
        "benchmark": config.benchmark,
        "method": config.method,
        "seed": config.seed,
        "data_source": bench.source,
        "tasks_learned": len(records),
        "scenarios": {SCENARIO: {**metrics.summarise(acc), "units": "% (forgetting and bwt: percentage points)"}},
        "backbone_parameters": backbone_params,
        "parameters_added_per_task": [
            {"task": r.task, **r.parameters, "percent_of_backbone": 100.0 * r.parameters["total"] / backbone_params}
            for r in records
        ],
        "parameters_added_after_reference": {"count": int(sum(added)), "percent_of_backbone": 100.0 * sum(added) / backbone_params},
        "seconds_per_task": [{"task": r.task, **r.seconds, "total": s} for r, s in zip(records, seconds)],
        "validation_accuracy": {r.task: r.val_accuracy for r in records},
        "peak_memory_bytes": metrics.peak_rss_bytes(),
    }


def _write(store: RunStore, config: RunConfig, bench: Benchmark, acc: np.ndarray, records: list[TaskRecord],
           backbone_params: int, seconds: list[float]) -> dict[str, Any]:
    n = len(records)
    header = ["after_task"] + [f"task{j + 1}" for j in range(n)]
    store.write_csv(f"accuracy_matrix_{SCENARIO}.csv", header,
                    [[f"task{i + 1}"] + ["" if np.isnan(v) else f"{v:.4f}" for v in acc[i]] for i in range(n)])
    store.write_csv("ranks.csv", ["task", "layer", "rows", "cols", "proximity", "rank", "parameters"],
                    [[r.task, lr.layer, lr.shape[0], lr.shape[1], f"{lr.proximity:.6g}", lr.rank,
                      lr.rank * (lr.shape[0] + lr.shape[1])] for r in records for lr in r.ranks.values()])
    store.write_csv("tasks.csv", ["task", "classes", "reference", "adapter_params", "norm_params", "head_params",
                                  "total_params", "percent_of_backbone", "val_accuracy", "seconds"],
                    [[r.task, " ".join(map(str, r.classes)), r.reference, r.parameters["adapter"], r.parameters["norm"],
                      r.parameters["head"], r.parameters["total"], f"{100.0 * r.parameters['total'] / backbone_params:.4f}",
                      f"{r.val_accuracy:.4f}", f"{s:.3f}"] for r, s in zip(records, seconds)])
    result = _metrics_json(config, bench, acc, records, backbone_params, seconds)
    store.write_json("metrics.json", result)
    return result


def run(config: RunConfig, on_task: Callable[[TaskRecord, np.ndarray], None] | None = None) -> RunResult:
    """Learn ``config.benchmark`` with ``config.method`` and write the run directory.

    ``on_task(record, accuracy)`` is called after each task is learned, evaluated and saved, with
    the task's record and the accuracy matrix so far (``(i+1, i+1)``, %); the CLI prints a line.

    Same config and seed on the same machine give the same numbers (seeded RNGs, deterministic
    algorithms).

    Raises:
        ConfigError: invalid config (before anything is loaded or written).
        DataError: the benchmark's dataset cannot be found.
        PearlError: the run directory exists and is not empty, or cannot be written.
        TrainingError: a task's loss became NaN or infinite.
    """
    check(config)
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    bench = make_benchmark(config.benchmark, config.seed, config.data.root, config.data.download, config.data.val_fraction,
                           config.data.shuffle_classes, config.data.train_per_task, config.data.test_per_task)
    directory = Path(config.out) if config.out else default_run_dir(config)
    if directory.exists() and any(directory.iterdir()):
        raise PearlError(f"run directory {directory} already exists and is not empty; choose a new one with --out DIR")
    store = RunStore(directory)
    store.write_text("config.yaml", save_config(config))
    learner = METHODS[config.method](config, bench.image_shape)
    n = len(bench.tasks)
    correct = np.zeros((n, n), dtype=np.int64)
    totals = np.array([len(t.test_y) for t in bench.tasks])
    seconds: list[float] = []
    result: dict[str, Any] = {}
    for i, task in enumerate(bench.tasks):
        start = time.perf_counter()
        learner.learn(task, _task_seed(config, i))
        for j in range(i + 1):
            seen = bench.tasks[j]
            correct[i, j] = learner.count_correct(seen.name, seen.test_x, seen.test_y)
        seconds.append(time.perf_counter() - start)
        store.write_tensors(f"tasks/{task.name}.safetensors", learner.task_tensors(task.name), {"task": task.name})
        acc = metrics.accuracy_matrix(correct[: i + 1, : i + 1], totals[: i + 1])
        result = _write(store, config, bench, acc, learner.records, learner.backbone_parameters, seconds)
        if on_task is not None:
            on_task(learner.records[-1], acc)
    return RunResult(directory, acc, learner.records, result)
