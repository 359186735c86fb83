"""Open a run directory and rebuild its learner from the saved task files (our design).

Used by resume, rollback, the validation guard's rollback, predict, inspect and export. Every
file is read through :meth:`~pearl_cl.engine.store.RunStore.read_verified`, so a corrupt or truncated
file is an error naming it, never a silently different model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from pearl_cl import device
from pearl_cl.learning import distributed
from pearl_cl.config import RunConfig, config_keys, load_config
from pearl_cl.data.benchmarks import Benchmark
from pearl_cl.errors import ConfigError, PearlError
from pearl_cl.registry import METHODS
from pearl_cl.engine.progress import PROGRESS, Progress
from pearl_cl.engine.store import MANIFEST, RunStore, open_store, sha256

CONFIG = "config.yaml"
BENCHMARK_COPY = "benchmark.yaml"  # a run on a benchmark file keeps a copy here
# where the data and the starting checkpoint are found; the guard and the logs of later tasks
RESUMABLE_CHANGES = ("data.root", "data.download", "data.workers", "backbone.pretrained", "guard.", "logging.", "train.device")


@dataclass
class OpenRun:
    """A run directory's ``store``, stored ``config`` and ``progress`` (None before the first
    task finished)."""

    store: RunStore
    config: RunConfig
    progress: Progress | None


def stored_config(root: Path, overrides: list[str] | None = None) -> RunConfig:
    """The config in ``root``'s ``config.yaml`` with ``overrides``. A file written before
    ``routing.sample`` existed (pearl-cl 0.1 and 0.2) gets ``routing.sample = None``: those
    versions computed the router statistics from every training image, and a resumed run goes on
    as it began.

    Raises:
        ConfigError: see :func:`~pearl_cl.config.load_config`.
    """
    config = load_config(root / CONFIG, overrides)
    written = yaml.safe_load((root / CONFIG).read_text()) or {}
    if "sample" not in (written.get("routing") or {}):
        config.routing.sample = None
    return config


def run_root(directory: str | Path) -> Path:
    """``directory`` as a path, when it holds a run (a ``manifest.json`` and a ``config.yaml``).

    Raises:
        PearlError: it does not (names what is missing and the fix).
    """
    root = Path(directory)
    missing = [name for name in (MANIFEST, CONFIG) if not (root / name).is_file()]
    if missing:
        raise PearlError(f"{root} is not a pearl-cl run directory (no {' or '.join(missing)}); give the --out of a run")
    return root


def open_run(directory: str | Path, settle: bool = False) -> OpenRun:
    """Open the run in ``directory``, verifying ``config.yaml`` and ``progress.json``. With
    ``settle`` (a writer holding the write lock: resume, rollback) the manifest is first brought
    in line with a write a stop interrupted (:meth:`~pearl_cl.engine.store.RunStore.settle`), and
    a ``progress.json`` that pearl-cl 0.2 or earlier renamed into place just before a stop is
    entered into the manifest when its own checksum holds.

    Raises:
        PearlError: not a run directory, or a listed file missing or corrupt (names it).
    """
    root = run_root(directory)
    store = open_store(root, writer=distributed.is_main())
    if settle and distributed.is_main():
        store.settle()
        _adopt_progress(store)
    store.read_verified(CONFIG)
    try:
        config = stored_config(root)
    except ConfigError as exc:
        raise PearlError(f"{root / CONFIG} does not hold a valid config: {exc}") from exc
    if BENCHMARK_COPY in store.files:
        store.read_verified(BENCHMARK_COPY)
        config.benchmark = str(root / BENCHMARK_COPY)  # the tasks as they were, wherever the original file is now
    progress = None
    path = root / PROGRESS
    if path.is_file():
        data = store.read_verified(PROGRESS)
        try:
            progress = Progress.from_json(json.loads(data))
        except (KeyError, TypeError, ValueError) as exc:
            raise PearlError(f"{path} is corrupt or not a progress file written by pearl-cl ({exc}); roll back with "
                             f"an intact copy, or start a new run") from exc
    return OpenRun(store, config, progress)


def _adopt_progress(store: RunStore) -> None:
    """Enter ``progress.json`` into the manifest when it fails its manifest digest but holds its
    own checksum: a run of pearl-cl 0.2 or earlier stopped between the file's rename and the
    manifest's update (those versions announced nothing before a rename)."""
    path = store.root / PROGRESS
    if not path.is_file() or sha256(path.read_bytes()) in store.listed_sha256(PROGRESS):
        return
    try:
        Progress.from_json(json.loads(path.read_bytes()))
    except (KeyError, TypeError, ValueError):
        return  # damaged: read_verified reports it
    store.adopt(PROGRESS)


def checked_overrides(opened: OpenRun, overrides: list[str]) -> RunConfig:
    """The stored config with ``overrides`` applied, provided they change nothing but
    :data:`RESUMABLE_CHANGES`.

    Raises:
        ConfigError: an override changes the run (names each key, its stored and new value).
    """
    stored = opened.config
    wanted = stored_config(opened.store.root, overrides)
    changed = [f"{key}: stored {stored.get(key)!r}, asked {wanted.get(key)!r}" for key in config_keys()
               if not key.startswith(RESUMABLE_CHANGES) and stored.get(key) != wanted.get(key)]
    if changed:
        raise ConfigError(f"the options do not match the run stored in {opened.store.root} ({'; '.join(changed)}); "
                          f"resume with the stored config (drop those options), or start a new run with --out DIR")
    return wanted


def load_learner(config: RunConfig, bench: Benchmark, store: RunStore, progress: Progress, learning: bool = True):
    """A learner of ``config.method`` holding the ``progress.learned`` tasks saved in ``store``,
    exactly as learning left them (each task file's checksum verified). Without ``learning``
    (predict, export, rollback) ``backbone.pretrained`` is not read: the saved tasks hold every
    weight, and only learning a new task (a new Separate network, or a first task) starts from it.
    ``bench`` may be one without images, as the run recorded it
    (:func:`~pearl_cl.engine.runner.run_benchmark`): then only its tasks' classes are checked.

    Raises:
        PearlError: a task file missing, corrupt, or not matching the benchmark (names it).
    """
    totals = [len(t.test_y) for t in bench.tasks]
    if bench.loaded and (totals != progress.totals.tolist() or bench.spec.scenario != progress.scenario):
        raise PearlError(f"the benchmark's data differs from the run in {store.root}: {len(totals)} tasks with "
                         f"{totals} test images now, {progress.totals.tolist()} when it ran; point data.root at "
                         f"the data the run used")
    torch.manual_seed(config.seed)
    if not learning:
        config = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, pretrained=None))
    learner = METHODS.get(config.method)(config, bench.image_shape, bench.n_classes)
    for task, record in zip(bench.tasks, progress.records):
        relative = f"tasks/{task.name}.safetensors"
        if record.task != task.name or tuple(record.classes) != task.classes:
            raise PearlError(f"{store.root / PROGRESS} lists {record.task} with classes {record.classes}, but the "
                             f"benchmark's {task.name} has {task.classes}; the data or its settings changed")
        tensors = {k: device.to_current(v) for k, v in store.read_tensors(relative).items()}  # saved from the CPU
        try:
            learner.restore(task, tensors, record)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise PearlError(f"{store.root / relative} does not fit this run's model ({exc}); restore the file from "
                             f"a copy, or roll back to the task before it") from exc
    return learner
