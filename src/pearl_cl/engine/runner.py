"""Run a method over a benchmark and write the run directory (DESIGN.md §6); the library entry point.

Our design. :func:`run` validates the config, loads the benchmark, learns the tasks in order,
evaluates every task seen after each task, with its task label (Task-IL) and without it through
the configured router (the benchmark's class-IL or domain-IL scenario), and writes after every
task: ``config.yaml``, ``metrics.json``, ``accuracy_matrix_<scenario>.csv`` for both scenarios,
``routing_accuracy.csv``, ``ranks.csv``, ``tasks.csv``
and ``tasks/<task>.safetensors``, all listed with checksums in ``manifest.json``. Each file is
replaced atomically; after a task the order is: the task's tensors, the CSV files,
``metrics.json``, then ``progress.json`` (:mod:`pearl_cl.engine.progress`), the commit point that
:func:`resume` and :func:`rollback` start from; a stop anywhere leaves at most the derived files
of one task ahead of it, and resuming rewrites them. Each task is learned under the validation
guard (``guard.*``): a failed task is rolled back by rebuilding the learner from the directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from pearl_cl.engine import distributed, metrics
from pearl_cl.core.adapters import INITS
from pearl_cl.backbones import BACKBONES, check_width
from pearl_cl.backbones.pretrained import IMAGENET, checkpoint_path
from pearl_cl.config import RunConfig, save_config
from pearl_cl.data.benchmark_file import portable_copy
from pearl_cl.data.benchmarks import BENCHMARK_FILE_SUFFIXES, Benchmark, TaskData, benchmark_spec, make_benchmark
from pearl_cl.errors import ConfigError, PearlError, TrainingError
from pearl_cl.methods import METHODS, TaskRecord
from pearl_cl.methods.record import COUNT_KEYS
from pearl_cl.core.probe import PROBES
from pearl_cl.engine.progress import PROGRESS, SCENARIO, Progress
from pearl_cl.engine.restore import BENCHMARK_COPY, checked_overrides, load_learner, open_run
from pearl_cl.routing import ROUTERS
from pearl_cl.engine.store import RunStore, open_store



def check(config: RunConfig) -> None:
    """Reject an invalid config before any data is loaded or any model trained.

    Raises:
        ConfigError: names the key, the bad value and the valid choices.
    """
    choices = {
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
    benchmark_spec(config.benchmark)
    config.pearl.to_rank_rule()
    for keys in (("train.reference_epochs", "train.lr"), ("train.epochs", "train.adapter_lr"), ("pearl.probe_epochs", "train.lr")):
        config.fit_settings(*keys)
    config.baselines.check()
    config.guard.check()
    if config.guard.min_val_accuracy is not None and config.data.val_fraction == 0:
        raise ConfigError("guard.min_val_accuracy needs validation images; set data.val_fraction above 0 (e.g. 0.1)")
    if not 0 <= config.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {config.seed}")
    if config.out is not None and not config.out.strip():
        raise ConfigError("out is empty; give a run directory with --out DIR, or leave it unset for runs/<name>")
    check_width(config.backbone.width)
    distributed.check_batch_size(config.train.batch_size)
    if config.backbone.pretrained is not None:
        checkpoint_path(config.backbone.pretrained, config.backbone.name)
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
    return Path("runs") / f"{benchmark_spec(config.benchmark).name}-{config.method}-seed{config.seed}-{stamp}"


def _task_seed(config: RunConfig, index: int) -> int:
    return config.seed * 1000 + index


def _number(value: float) -> float | None:
    """``value``, or None when it is NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


def _metrics_json(config: RunConfig, source: str, progress: Progress, learner, peak_is_per_run: bool | dict[str, Any],
                  status: str | None) -> dict[str, Any]:
    records, backbone_params = progress.records, learner.backbone_parameters
    added = [r.parameters["total"] for r in records if not r.reference]
    n = len(progress.totals)
    routing = progress.routing()
    return {
        "status": status or ("complete" if len(records) == n else f"incomplete: {len(records)} of {n} tasks learned"),
        "benchmark": config.benchmark,
        "method": config.method,
        "seed": config.seed,
        "processes": distributed.world_size(),
        "data_source": source,
        "tasks_learned": len(records),
        "scenarios": {name: {**metrics.summarise(acc), "units": "% (forgetting and bwt: percentage points)"}
                      for name, acc in progress.accuracy().items()} if records else {},
        "routing": {"router": learner.router_name, "scenario": progress.scenario,
                    "accuracy": _number(metrics.average_accuracy(routing)) if records else None,
                    "accuracy_per_task": [_number(v) for v in routing[-1]] if records else [],
                    "units": "% of each task's test images routed to their own task (null: no task to identify)"},
        "backbone_parameters": backbone_params,
        "parameters_added_per_task": [
            {"task": r.task, **r.parameters, "percent_of_backbone": metrics.percent_of(r.parameters["total"], backbone_params)}
            for r in records
        ],
        "parameters_added_after_reference": {"count": int(sum(added)), "percent_of_backbone": metrics.percent_of(sum(added), backbone_params)},
        "state_numbers": {"per_task": {r.task: r.state for r in records},
                          "units": "numbers kept between tasks besides parameters (Fisher, importances, old model, data)"},
        "seconds_per_task": [{"task": r.task, **r.seconds, "total": s} for r, s in zip(records, progress.seconds)],
        "validation_accuracy": {r.task: _number(r.val_accuracy) for r in records},
        "retried": {r.task: r.note for r in records if r.note},
        "train_loss": {r.task: _number(r.train_loss) for r in records},
        **(peak_is_per_run if isinstance(peak_is_per_run, dict) else {
            "peak_memory_bytes": distributed.maximum(metrics.peak_rss_bytes()),
            "peak_memory_scope": ("this run" if peak_is_per_run else "this process (the peak could not be reset)")
                                 + (f", the largest of {distributed.world_size()} processes" if distributed.active() else "")}),
    }


def _csv(value: float, digits: int) -> str:
    """A CSV cell: ``value`` with ``digits`` decimals, empty when NaN."""
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def _write(store: RunStore, config: RunConfig, source: str, progress: Progress, learner,
           peak_is_per_run: bool | dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """Rewrite every file derived from ``progress``: the CSVs, ``metrics.json``, then
    ``progress.json`` last (the commit point). Returns the metrics. ``peak_is_per_run`` says
    whether the process's peak memory was reset at the run's start, or gives the
    ``peak_memory_*`` entries to keep (a rollback keeps the run's own)."""
    records, backbone_params, n = progress.records, learner.backbone_parameters, progress.learned
    header = ["after_task"] + [f"task{j + 1}" for j in range(n)]
    tables = {**{f"accuracy_matrix_{k}": v for k, v in progress.accuracy().items()}, "routing_accuracy": progress.routing()}
    for name, acc in tables.items():
        store.write_csv(f"{name}.csv", header, [[f"task{i + 1}"] + [_csv(v, 4) for v in acc[i]] for i in range(n)])
    store.write_csv("ranks.csv", ["task", "layer", "rows", "cols", "proximity", "rank", "parameters"],
                    [[r.task, lr.layer, lr.shape[0], lr.shape[1], f"{lr.proximity:.6g}", lr.rank,
                      lr.rank * (lr.shape[0] + lr.shape[1])] for r in records for lr in r.ranks.values()])
    store.write_csv("tasks.csv", ["task", "classes", "reference"] + [f"{k}_params" for k in COUNT_KEYS]
                    + ["percent_of_backbone", "state_numbers", "train_loss", "val_accuracy", "seconds"],
                    [[r.task, " ".join(map(str, r.classes)), r.reference] + [r.parameters[k] for k in COUNT_KEYS]
                     + [f"{metrics.percent_of(r.parameters['total'], backbone_params):.4f}", r.state, _csv(r.train_loss, 6),
                        _csv(r.val_accuracy, 4), f"{s:.3f}"] for r, s in zip(records, progress.seconds)])
    result = _metrics_json(config, source, progress, learner, peak_is_per_run, status)
    store.write_json("metrics.json", result)
    store.write_json(PROGRESS, progress.to_json())
    return result


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic algorithms (warn-only) inside the block, the caller's setting after it."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


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
        TrainingError: a task failed its guard (NaN or infinite loss, validation accuracy under
            ``guard.min_val_accuracy``) and its retry, if any; it was rolled back and the run
            directory holds the tasks before it, ready for :func:`resume`.
    """
    distributed.initialise()
    check(config)
    config = _absolute_checkpoint(config)
    with _deterministic():
        torch.manual_seed(config.seed)
        peak_is_per_run = metrics.reset_peak_rss()
        bench = benchmark_for(config)
        directory = distributed.broadcast_object(Path(config.out) if config.out else default_run_dir(config))
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            what = "is a file" if not directory.is_dir() else "already exists and is not empty"
            raise PearlError(f"run directory {directory} {what}; choose a new one with --out DIR, "
                             f"or continue it with pearl-cl run --resume {directory}")
        config = dataclasses.replace(config, out=str(directory))
        learner = METHODS[config.method](config, bench.image_shape, bench.n_classes)  # may reject the checkpoint
        distributed.barrier()  # every process has checked the directory before process 0 creates it
        store = open_store(directory, writer=distributed.is_main())
        if config.benchmark.endswith(BENCHMARK_FILE_SUFFIXES):  # keep the run self-contained
            store.write_bytes(BENCHMARK_COPY, portable_copy(Path(config.benchmark)))
        store.write_text("config.yaml", save_config(config))
        return _learn(config, bench, store, learner, _fresh_progress(bench), on_task, peak_is_per_run)


def _absolute_checkpoint(config: RunConfig) -> RunConfig:
    """``config`` with ``backbone.pretrained``, when a path, made absolute (so the saved config
    finds it from any working directory)."""
    source = config.backbone.pretrained
    if source is None or source == IMAGENET:
        return config
    return dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, pretrained=str(Path(source).expanduser().resolve())))


def _fresh_progress(bench: Benchmark) -> Progress:
    """Nothing learned yet of ``bench``'s tasks."""
    return Progress.start(bench.spec.scenario, [len(t.test_y) for t in bench.tasks])


def resume(directory: str | Path, overrides: list[str] | None = None,
           on_task: Callable[[TaskRecord, np.ndarray], None] | None = None) -> RunResult:
    """Continue the run in ``directory`` after its last complete task.

    The learner is rebuilt from the saved task files (checksums verified) and the remaining
    tasks are learned with the stored config and seeds, so the result equals an uninterrupted
    run's. ``overrides`` (``"key=value"``) may only repeat the stored values, or change
    ``data.root``, ``data.download`` and ``guard.*``.

    Raises:
        PearlError: not a run directory, a missing or corrupt file, or ``overrides`` that change
            the run (names the keys).
        TrainingError: as :func:`run`.
    """
    distributed.initialise()
    opened = open_run(directory)
    config = opened.config
    if overrides:
        config = _absolute_checkpoint(checked_overrides(opened, overrides))
    with _deterministic():
        peak_is_per_run = metrics.reset_peak_rss()
        bench = benchmark_for(config)
        progress = opened.progress or _fresh_progress(bench)
        learner = load_learner(config, bench, opened.store, progress)
        return _learn(config, bench, opened.store, learner, progress, on_task, peak_is_per_run)


def rollback(directory: str | Path, to_task: int) -> RunResult:
    """Remove every task after task ``to_task`` (1-based) from the run in ``directory``: their
    files are deleted and every table is rewritten as it was after task ``to_task``, so that
    :func:`resume` continues from there.

    Raises:
        PearlError: not a run directory, a missing or corrupt file, or ``to_task`` outside
            ``[1, tasks learned]``.
    """
    opened = open_run(directory)
    learned = opened.progress.learned if opened.progress else 0
    if learned < 2:
        raise PearlError(f"{opened.store.root} has {learned} task(s) learned: nothing to roll back")
    if not 1 <= to_task < learned:
        raise PearlError(f"--to-task must be between 1 and {learned - 1} (keeps tasks 1..K of the {learned} learned in "
                         f"{opened.store.root}), got {to_task}")
    progress = opened.progress.truncated(to_task)
    opened.store.write_json(PROGRESS, progress.to_json())  # the commit point first; the rest follows from it
    bench = benchmark_for(opened.config)
    learner = load_learner(opened.config, bench, opened.store, progress, learning=False)
    result = _write(opened.store, opened.config, bench.source, progress, learner, _kept_peak(opened.store.root),
                    status=f"incomplete: {to_task} of {len(bench.tasks)} tasks learned (rolled back from {learned})")
    for task in bench.tasks[to_task:learned]:
        opened.store.delete(f"tasks/{task.name}.safetensors")
    return _result(opened.store.root, progress, result)


def _kept_peak(root: Path) -> dict[str, Any] | bool:
    """The run's own ``peak_memory_*`` entries from its ``metrics.json`` (for a rollback, which
    trains nothing), or False when that file is unreadable."""
    try:
        old = json.loads((root / "metrics.json").read_text())
        return {k: old[k] for k in ("peak_memory_bytes", "peak_memory_scope")}
    except (OSError, ValueError, KeyError, TypeError):
        return False


def inspect(directory: str | Path) -> tuple[RunResult, list[str]]:
    """The saved run in ``directory`` as a :class:`RunResult` (from ``progress.json`` and
    ``metrics.json``, no data loaded), and the files that fail their checksum or are missing.

    Raises:
        PearlError: not a run directory, no task learned yet, ``config.yaml`` or
            ``progress.json`` corrupt, or ``metrics.json`` unreadable.
    """
    opened = open_run(directory)
    if opened.progress is None or not opened.progress.learned:
        raise PearlError(f"{directory} has no task learned yet")
    try:
        result = json.loads((opened.store.root / "metrics.json").read_text())
    except (OSError, ValueError) as exc:
        raise PearlError(f"{opened.store.root / 'metrics.json'} is unreadable ({exc}); pearl-cl run --resume rewrites it") from exc
    return _result(opened.store.root, opened.progress, result), opened.store.verify()


def _result(directory: Path, progress: Progress, result: dict[str, Any]) -> RunResult:
    return RunResult(directory, progress.accuracy(), progress.routing(), progress.records, result)


def benchmark_for(config: RunConfig) -> Benchmark:
    """The benchmark ``config`` names, cut into tasks with its ``data`` settings.

    Raises:
        ConfigError: unknown benchmark or bad split settings.
        DataError: the dataset cannot be found.
    """
    d = config.data
    return make_benchmark(config.benchmark, config.seed, d.root, d.download, d.val_fraction, d.shuffle_classes,
                          d.train_per_task, d.test_per_task)


def _guard(config: RunConfig, record: TaskRecord) -> str | None:
    """Why ``record``'s task fails the validation guard, or None when it passes."""
    floor = config.guard.min_val_accuracy
    if floor is not None and not record.val_accuracy >= floor:
        return f"validation accuracy {record.val_accuracy:.2f}% is below guard.min_val_accuracy={floor:g}"
    return None


def _attempt(learner, task: TaskData, seed: int, rank_factor: int) -> str | None:
    """Learn ``task``; the reason it failed (loss or guard), or None."""
    try:
        record = learner.learn(task, seed, rank_factor=rank_factor) if rank_factor > 1 else learner.learn(task, seed)
    except TrainingError as exc:
        return str(exc)
    return _guard(learner.config, record)


def _agreed(failure: str | None) -> str | None:
    """``failure``, or, when this process passed but another failed, a reason saying so: every
    process then rolls back alike (:mod:`pearl_cl.engine.distributed`)."""
    if distributed.any_process(failure is not None) and failure is None:
        return "it failed in another process (that process prints why)"
    return failure


def _learn_guarded(config: RunConfig, bench: Benchmark, store: RunStore, learner, progress: Progress, i: int):
    """Learn task ``i`` under the guard; returns the learner that holds it.

    A failed attempt is rolled back by rebuilding the learner from the run directory (tasks
    before ``i``, untouched on disk); a method with ranks then retries once with its ranks times
    ``guard.rank_factor`` when ``guard.retry`` is set.

    Raises:
        TrainingError: the task failed (and its retry failed); the run directory, never written
            for it, holds the tasks before it.
    """
    task, seed = bench.tasks[i], _task_seed(config, i)
    failure = _agreed(_attempt(learner, task, seed, 1))
    if failure is None:
        return learner
    if config.guard.retry and learner.has_ranks and i > 0:  # the reference task has no ranks to enlarge
        learner = load_learner(config, bench, store, progress)
        second = _agreed(_attempt(learner, task, seed, config.guard.rank_factor))
        if second is None:
            learner.records[-1].note = f"first attempt failed ({failure}); retried with ranks x{config.guard.rank_factor}"
            return learner
        failure = f"{failure}; the retry with ranks x{config.guard.rank_factor} failed too: {second}"
    raise TrainingError(f"{task.name} failed and was rolled back: {failure}. {store.root} keeps the {i} task(s) "
                        f"learned before it; start a new run with a changed config, or continue this one with "
                        f"pearl-cl run --resume {store.root} and a changed guard (--set guard.…)")


def _learn(config: RunConfig, bench: Benchmark, store: RunStore, learner, progress: Progress,
           on_task: Callable[[TaskRecord, np.ndarray], None] | None, peak_is_per_run: bool) -> RunResult:
    """Learn the tasks after ``progress.learned``, evaluating and writing after each (a resumed
    run first rewrites the files derived from ``progress``, repairing any a stop left stale)."""
    result = _write(store, config, bench.source, progress, learner, peak_is_per_run) if progress.learned else {}
    for i in range(progress.learned, len(bench.tasks)):
        start = time.perf_counter()
        try:
            learner = _learn_guarded(config, bench, store, learner, progress, i)
        except PearlError:
            _write(store, config, bench.source, progress, learner, peak_is_per_run,
                   status=f"failed at {bench.tasks[i].name}: {progress.learned} of {len(bench.tasks)} tasks learned")
            raise
        for j, counts in enumerate(learner.evaluate(list(bench.tasks[: i + 1]))):
            progress.correct[SCENARIO][i, j] = counts.task_il
            progress.correct[progress.scenario][i, j], progress.routed[i, j] = counts.routed_right, counts.routed_own
        progress.seconds.append(time.perf_counter() - start)
        progress.records.append(learner.records[-1])
        progress.identifies_tasks = learner.identifies_tasks
        store.write_tensors(f"tasks/{bench.tasks[i].name}.safetensors", learner.task_tensors(bench.tasks[i].name),
                            {"task": bench.tasks[i].name})
        result = _write(store, config, bench.source, progress, learner, peak_is_per_run)
        if on_task is not None:
            on_task(learner.records[-1], progress.accuracy()[SCENARIO])
    return _result(store.root, progress, result)
