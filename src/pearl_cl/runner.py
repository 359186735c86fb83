"""Run a method over a benchmark and write the run directory (DESIGN.md §6); the library entry point.

Our design. :func:`run` validates the config, loads the benchmark, learns the tasks in order,
evaluates every task seen after each task, with its task label (Task-IL) and without it through
the configured router (the benchmark's class-IL or domain-IL scenario), and writes after every
task: ``config.yaml``, ``metrics.json``, ``accuracy_matrix_<scenario>.csv`` for both scenarios,
``routing_accuracy.csv``, ``ranks.csv``, ``tasks.csv``
and ``tasks/<task>.safetensors``, all listed with checksums in ``manifest.json``. Each file is
replaced atomically; after a task the order is: the task's tensors, the CSV files, then
``metrics.json`` last, so a ``metrics.json`` never names a task whose files are not yet on disk.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pearl_cl import metrics
from pearl_cl.adapters import INITS
from pearl_cl.backbones import BACKBONES, check_width
from pearl_cl.config import RunConfig, save_config
from pearl_cl.data.benchmarks import BENCHMARKS, Benchmark, TaskData, make_benchmark
from pearl_cl.errors import ConfigError, PearlError
from pearl_cl.methods import METHODS, TaskRecord
from pearl_cl.methods.record import COUNT_KEYS
from pearl_cl.probe import PROBES
from pearl_cl.routing import ROUTERS
from pearl_cl.store import RunStore
from pearl_cl.training import EVAL_BATCH

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
        "routing.router": (config.routing.router, list(ROUTERS)),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            hint = " (a fixed rank K: method lora with pearl.fixed_rank=K)" if str(value).startswith("lora-r") else ""
            raise ConfigError(f"unknown {key} {value!r}; choose one of: {', '.join(allowed)}{hint}")
    config.pearl.to_rank_rule()
    for keys in (("train.reference_epochs", "train.lr"), ("train.epochs", "train.adapter_lr"), ("pearl.probe_epochs", "train.lr")):
        config.fit_settings(*keys)
    config.baselines.check()
    if not 0 <= config.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {config.seed}")
    if config.out is not None and not config.out.strip():
        raise ConfigError("out is empty; give a run directory with --out DIR, or leave it unset for runs/<name>")
    check_width(config.backbone.width)
    if not 0.0 <= config.routing.shrinkage <= 1.0:
        raise ConfigError(f"routing.shrinkage must be in [0, 1], got {config.routing.shrinkage}")


@dataclass
class RunResult:
    """A finished run: its directory; ``accuracy``, scenario (``task-il`` and the benchmark's
    ``class-il`` or ``domain-il``) → ``(T, T)`` accuracy matrix in %; ``routing``, the ``(T, T)``
    matrix of the router's task-identification accuracy in %; the task records; and ``metrics``
    (the content of ``metrics.json``)."""

    directory: Path
    accuracy: dict[str, np.ndarray]
    routing: np.ndarray
    records: list[TaskRecord]
    metrics: dict[str, Any]


def default_run_dir(config: RunConfig) -> Path:
    """``runs/<benchmark>-<method>-seed<seed>-<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.benchmark}-{config.method}-seed{config.seed}-{stamp}"


def _task_seed(config: RunConfig, index: int) -> int:
    return config.seed * 1000 + index


def _number(value: float) -> float | None:
    """``value``, or None when it is NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


def _metrics_json(config: RunConfig, bench: Benchmark, accs: dict[str, np.ndarray], routing: np.ndarray,
                  learner, seconds: list[float], peak_is_per_run: bool) -> dict[str, Any]:
    records, backbone_params = learner.records, learner.backbone_parameters
    added = [r.parameters["total"] for r in records if not r.reference]
    n = len(bench.tasks)
    return {
        "status": "complete" if len(records) == n else f"incomplete: {len(records)} of {n} tasks learned",
        "benchmark": config.benchmark,
        "method": config.method,
        "seed": config.seed,
        "data_source": bench.source,
        "tasks_learned": len(records),
        "scenarios": {name: {**metrics.summarise(acc), "units": "% (forgetting and bwt: percentage points)"}
                      for name, acc in accs.items()},
        "routing": {"router": learner.router_name,
                    "scenario": bench.spec.scenario, "accuracy": _number(metrics.average_accuracy(routing)),
                    "accuracy_per_task": [_number(v) for v in routing[-1]],
                    "units": "% of each task's test images routed to their own task (null: no task to identify)"},
        "backbone_parameters": backbone_params,
        "parameters_added_per_task": [
            {"task": r.task, **r.parameters, "percent_of_backbone": metrics.percent_of(r.parameters["total"], backbone_params)}
            for r in records
        ],
        "parameters_added_after_reference": {"count": int(sum(added)), "percent_of_backbone": metrics.percent_of(sum(added), backbone_params)},
        "state_numbers": {"per_task": {r.task: r.state for r in records},
                          "units": "numbers kept between tasks besides parameters (Fisher, importances, old model, data)"},
        "seconds_per_task": [{"task": r.task, **r.seconds, "total": s} for r, s in zip(records, seconds)],
        "validation_accuracy": {r.task: _number(r.val_accuracy) for r in records},
        "train_loss": {r.task: _number(r.train_loss) for r in records},
        "peak_memory_bytes": metrics.peak_rss_bytes(),
        "peak_memory_scope": "this run" if peak_is_per_run else "this process (the peak could not be reset)",
    }


def _csv(value: float, digits: int) -> str:
    """A CSV cell: ``value`` with ``digits`` decimals, empty when NaN."""
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def _write(store: RunStore, config: RunConfig, bench: Benchmark, accs: dict[str, np.ndarray], routing: np.ndarray,
           learner, seconds: list[float], peak_is_per_run: bool) -> dict[str, Any]:
    records, backbone_params = learner.records, learner.backbone_parameters
    n = len(records)
    header = ["after_task"] + [f"task{j + 1}" for j in range(n)]
    for name, acc in {**{f"accuracy_matrix_{k}": v for k, v in accs.items()}, "routing_accuracy": routing}.items():
        store.write_csv(f"{name}.csv", header, [[f"task{i + 1}"] + [_csv(v, 4) for v in acc[i]] for i in range(n)])
    store.write_csv("ranks.csv", ["task", "layer", "rows", "cols", "proximity", "rank", "parameters"],
                    [[r.task, lr.layer, lr.shape[0], lr.shape[1], f"{lr.proximity:.6g}", lr.rank,
                      lr.rank * (lr.shape[0] + lr.shape[1])] for r in records for lr in r.ranks.values()])
    store.write_csv("tasks.csv", ["task", "classes", "reference"] + [f"{k}_params" for k in COUNT_KEYS]
                    + ["percent_of_backbone", "state_numbers", "train_loss", "val_accuracy", "seconds"],
                    [[r.task, " ".join(map(str, r.classes)), r.reference] + [r.parameters[k] for k in COUNT_KEYS]
                     + [f"{metrics.percent_of(r.parameters['total'], backbone_params):.4f}", r.state, _csv(r.train_loss, 6),
                        _csv(r.val_accuracy, 4), f"{s:.3f}"] for r, s in zip(records, seconds)])
    result = _metrics_json(config, bench, accs, routing, learner, seconds, peak_is_per_run)
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
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _run(config, on_task)
    finally:
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def benchmark_for(config: RunConfig) -> Benchmark:
    """The benchmark ``config`` names, cut into tasks with its ``data`` settings.

    Raises:
        ConfigError: unknown benchmark or bad split settings.
        DataError: the dataset cannot be found.
    """
    d = config.data
    return make_benchmark(config.benchmark, config.seed, d.root, d.download, d.val_fraction, d.shuffle_classes,
                          d.train_per_task, d.test_per_task)


def _run(config: RunConfig, on_task: Callable[[TaskRecord, np.ndarray], None] | None) -> RunResult:
    torch.manual_seed(config.seed)
    peak_is_per_run = metrics.reset_peak_rss()
    bench = benchmark_for(config)
    directory = Path(config.out) if config.out else default_run_dir(config)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        what = "is a file" if not directory.is_dir() else "already exists and is not empty"
        raise PearlError(f"run directory {directory} {what}; choose a new one with --out DIR")
    store = RunStore(directory)
    config = dataclasses.replace(config, out=str(directory))
    store.write_text("config.yaml", save_config(config))
    learner = METHODS[config.method](config, bench.image_shape, bench.n_classes)
    n = len(bench.tasks)
    scenario = bench.spec.scenario
    correct = {SCENARIO: np.zeros((n, n), dtype=np.int64), scenario: np.zeros((n, n), dtype=np.int64)}
    routed = np.zeros((n, n), dtype=np.int64)
    totals = np.array([len(t.test_y) for t in bench.tasks])
    seconds: list[float] = []
    result: dict[str, Any] = {}
    for i, task in enumerate(bench.tasks):
        start = time.perf_counter()
        try:
            learner.learn(task, _task_seed(config, i))
        except PearlError as exc:
            raise type(exc)(f"{exc}. {directory} keeps the {i} task(s) learned before {task.name}") from exc
        for j, seen in enumerate(bench.tasks[: i + 1]):
            correct[SCENARIO][i, j] = learner.count_correct(seen.name, seen.test_x, seen.test_y)
            correct[scenario][i, j], routed[i, j] = routed_counts(learner, seen, j)
        seconds.append(time.perf_counter() - start)
        store.write_tensors(f"tasks/{task.name}.safetensors", learner.task_tensors(task.name), {"task": task.name})
        accs = {k: metrics.accuracy_matrix(c[: i + 1, : i + 1], totals[: i + 1]) for k, c in correct.items()}
        routing = metrics.accuracy_matrix(routed[: i + 1, : i + 1], totals[: i + 1])
        if not learner.identifies_tasks:
            routing[:] = np.nan
        result = _write(store, config, bench, accs, routing, learner, seconds, peak_is_per_run)
        if on_task is not None:
            on_task(learner.records[-1], accs[SCENARIO])
    return RunResult(directory, accs, routing, learner.records, result)


def routed_counts(learner, task: TaskData, index: int, router: str | None = None) -> tuple[int, int]:
    """Images of ``task``'s test set whose class the router-chosen branch predicts right, and
    images routed to ``task`` (its position ``index``), in batches of :data:`EVAL_BATCH`;
    ``router`` defaults to the learner's configured one."""
    right = routed = 0
    labels = task.test_labels
    for start in range(0, len(labels), EVAL_BATCH):
        x, y = task.test_x[start : start + EVAL_BATCH], labels[start : start + EVAL_BATCH]
        pred, chosen = learner.route(x, true_task=torch.full((len(y),), index), router=router)
        right += int((pred == y).sum())
        routed += int((chosen == index).sum())
    return right, routed
