"""Run a method over a benchmark and write the run directory: the library entry point (our
design).

:func:`run` validates the config, loads the benchmark, builds the registered learner, opens the
run directory and hands them to the engine (:func:`pearl_cl.engine.engine.learn_tasks`) with
the default hooks: evaluation after each task (with its task label, Task-IL, and without it
through the configured router: the benchmark's class-IL or domain-IL scenario), the checkpoint
(``config.yaml``, ``metrics.json``, the CSV tables, ``tasks/<task>.safetensors`` and
``progress.json``, the commit point, every file listed with its checksum in ``manifest.json``),
the step loggers and the caller's callback. Resume, rollback and inspect are operations on a run
directory (:mod:`pearl_cl.engine.operations`).
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pearl_cl import device
from pearl_cl.backbones.pretrained import IMAGENET
from pearl_cl.config import RunConfig, save_config, validate
from pearl_cl.data.benchmark_file import portable_copy
from pearl_cl.data.benchmarks import (BENCHMARK_FILE_SUFFIXES, Benchmark, benchmark_spec, describe,
                                      described_benchmark, make_benchmark, scenario_view)
from pearl_cl.learning import distributed, metrics
from pearl_cl.engine.engine import Hook, RunResult, RunState, learn_tasks
from pearl_cl.engine.hooks import Checkpoint, Evaluate, TaskCallback
from pearl_cl.engine.lock import LOCK, OWNER, writing
from pearl_cl.engine.loggers import StepCSV, TensorBoard
from pearl_cl.engine.progress import Progress
from pearl_cl.engine.restore import BENCHMARK_COPY, OpenRun
from pearl_cl.engine.store import MANIFEST, TEMPORARY, open_store
from pearl_cl.errors import ConfigError, PearlError
from pearl_cl.methods.record import TaskRecord
from pearl_cl.registry import METHODS

OnTask = Callable[[TaskRecord, np.ndarray], None]


STARTED = (LOCK, OWNER, MANIFEST, BENCHMARK_COPY)  # what a run directory holds before its config.yaml


def default_run_dir(config: RunConfig) -> Path:
    """``runs/<benchmark>-<method>-seed<seed>-<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{benchmark_spec(config.benchmark).name}-{config.method}-seed{config.seed}-{stamp}"


def benchmark_for(config: RunConfig) -> Benchmark:
    """The benchmark ``config`` names, cut into tasks with its ``data`` settings, as its
    ``scenario`` sees it (:func:`~pearl_cl.data.benchmarks.scenario_view`).

    Raises:
        ConfigError: unknown benchmark, bad split settings, or a scenario the benchmark or method
            cannot be trained in.
        DataError: the dataset cannot be found.
    """
    d = config.data
    bench = make_benchmark(config.benchmark, config.seed, d.root, d.download, d.val_fraction, d.shuffle_classes,
                           d.train_per_task, d.test_per_task, d.first_task_classes, d.classes_per_task, d.standardise,
                           d.class_order)
    if config.scenario == "task-il" and bench.spec.scenario == "domain-il" and METHODS.get(config.method).single_head:
        raise ConfigError(f"scenario=task-il trains each task over its own output units, but {bench.spec.name}'s tasks "
                          f"share their classes and {config.method} has one head: use scenario=domain-il")
    return scenario_view(bench, config.scenario)


DATA_RECORD = "data.json"  # describe(bench) of the run's benchmark: predict and export read no dataset


def run_benchmark(opened: OpenRun) -> Benchmark:
    """The benchmark of the run ``opened``, without images, from its ``data.json`` (checksum
    verified), so that predict and export work wherever the dataset is; for a run directory
    written before pearl-cl kept that file, the benchmark its config names, loaded.

    Raises:
        PearlError: ``data.json`` corrupt, or not what pearl-cl writes.
        ConfigError, DataError: as :func:`benchmark_for`, for a run without ``data.json``.
    """
    if DATA_RECORD not in opened.store.files:
        return benchmark_for(opened.config)
    path = opened.store.root / DATA_RECORD
    try:
        return described_benchmark(json.loads(opened.store.read_verified(DATA_RECORD)))
    except ValueError as exc:  # json's errors too
        raise PearlError(f"{path} is not the data record pearl-cl writes ({exc}); restore it from a copy") from exc


def fresh_progress(bench: Benchmark) -> Progress:
    """Nothing learned yet of ``bench``'s tasks."""
    return Progress.start(bench.spec.scenario, [len(t.test_y) for t in bench.tasks])


def absolute_checkpoint(config: RunConfig) -> RunConfig:
    """``config`` with ``backbone.pretrained``, when a path, made absolute (so the saved config
    finds it from any working directory)."""
    source = config.backbone.pretrained
    if source is None or source == IMAGENET:
        return config
    return dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, pretrained=str(Path(source).expanduser().resolve())))


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic algorithms (warn-only) inside the block, the caller's setting after it."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@contextmanager
def placed(config: RunConfig) -> Iterator[None]:
    """The block runs on the device and in the precision of ``train.device`` and
    ``train.precision`` (:mod:`pearl_cl.device`), with the device's peak memory counted afresh.

    Raises:
        ConfigError: a device this machine lacks, or a precision the device cannot run.
    """
    with device.use(device.resolve(config.train.device), config.train.precision):
        device.reset_peak_memory()
        yield


def check_new(directory: Path) -> None:
    """Raise :class:`PearlError` unless ``directory`` is missing or holds nothing but what a run
    stopped before its ``config.yaml`` was in place leaves: the write lock
    (:mod:`pearl_cl.engine.lock`), ``manifest.json``, ``benchmark.yaml`` and temporary files. Such
    a run is started again from the beginning."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise PearlError(f"--out {directory} is a file, not a directory; choose a new run directory with --out DIR")
    if any(p.name not in STARTED and not fnmatch(p.name, TEMPORARY) for p in directory.iterdir()):
        raise PearlError(f"run directory {directory} already exists and is not empty; choose a new one with --out DIR, "
                         f"or continue it with pearl-cl run --resume {directory}")


def default_hooks(config: RunConfig, directory: Path, on_task: OnTask | None) -> list[Hook]:
    """The hooks of every run, in order: evaluation, ``steps.csv``, TensorBoard (with
    ``logging.tensorboard``), the checkpoint (whose ``progress.json`` commits the task, so it
    comes after every file of the task), then ``on_task``."""
    hooks: list[Hook] = [Evaluate(), StepCSV()]
    if config.logging.tensorboard:
        hooks.append(TensorBoard(directory))
    hooks.append(Checkpoint())
    if on_task is not None:
        hooks.append(TaskCallback(on_task))
    return hooks


def run(config: RunConfig, on_task: OnTask | None = None) -> RunResult:
    """Learn ``config.benchmark`` with ``config.method`` and write the run directory.

    ``on_task(record, accuracy)`` is called after each task is learned, evaluated and saved, with
    the task's record and the Task-IL accuracy matrix so far (``(i+1, i+1)``, %); the CLI prints
    a line. Same config and seed on the same machine give the same numbers (seeded RNGs,
    deterministic algorithms).

    Raises:
        ConfigError: invalid config (before anything is loaded or written).
        DataError: the benchmark's dataset cannot be found.
        PearlError: the run directory exists and is not empty, cannot be written, or another
            process is writing it (:mod:`pearl_cl.engine.lock`).
        TrainingError: a task failed its guard (NaN or infinite loss, validation accuracy under
            ``guard.min_val_accuracy``) and its retry, if any; it was rolled back and the run
            directory holds the tasks before it, ready for
            :func:`~pearl_cl.engine.operations.resume`.
    """
    distributed.initialise()
    validate(config)
    config = absolute_checkpoint(config)
    with deterministic(), placed(config):
        torch.manual_seed(config.seed)
        peak = metrics.reset_peak_rss()
        bench = benchmark_for(config)
        directory = distributed.broadcast_object(Path(config.out) if config.out else default_run_dir(config))
        check_new(directory)
        config = dataclasses.replace(config, out=str(directory))
        learner = METHODS.get(config.method)(config, bench.image_shape, bench.n_classes)  # may reject the checkpoint
        distributed.barrier()  # every process has checked the directory before process 0 creates it
        store = open_store(directory, writer=distributed.is_main())  # process 0 creates the directory
        with writing(directory, distributed.is_main()):
            if distributed.is_main():
                check_new(directory)  # again, now that no other writer can start: two runs may have raced to it
                store.clear()  # what a start killed before its config.yaml left
            if config.benchmark.endswith(BENCHMARK_FILE_SUFFIXES):  # keep the run self-contained
                store.write_bytes(BENCHMARK_COPY, portable_copy(Path(config.benchmark)))
            store.write_text("config.yaml", save_config(config))
            store.write_json(DATA_RECORD, describe(bench))
            state = RunState(config, bench, store, learner, fresh_progress(bench), peak)
            return learn_tasks(state, default_hooks(config, directory, on_task))
