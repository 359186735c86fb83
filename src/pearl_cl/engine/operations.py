"""Operations on a run directory: resume, rollback and inspect (our design; docs/operations.md).

Each opens the directory through :func:`~pearl_cl.engine.restore.open_run` (checksums
verified) and works from ``progress.json``, the commit point, never from a learner in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pearl_cl.learning import distributed, metrics
from pearl_cl.engine.engine import RunResult, RunState, learn_tasks
from pearl_cl.engine.loggers import keep_steps
from pearl_cl.engine.outputs import MACHINE_KEYS, METRICS, write_outputs
from pearl_cl.engine.progress import PROGRESS
from pearl_cl.engine.store import MANIFEST, ReplicaStore
from pearl_cl.engine.lock import writing
from pearl_cl.engine.restore import OpenRun, checked_overrides, load_learner, open_run, run_root
from pearl_cl.data.benchmarks import describe
from pearl_cl.engine.runner import (DATA_RECORD, OnTask, absolute_checkpoint, benchmark_for, default_hooks, deterministic,
                                    fresh_progress, placed)
from pearl_cl.errors import PearlError


def resume(directory: str | Path, overrides: list[str] | None = None, on_task: OnTask | None = None) -> RunResult:
    """Continue the run in ``directory`` after its last complete task.

    The learner is rebuilt from the saved task files (checksums verified) and the remaining
    tasks are learned with the stored config and seeds, so the result equals an uninterrupted
    run's. ``overrides`` (``"key=value"``) may only repeat the stored values, or change
    ``data.root``, ``data.download``, ``backbone.pretrained`` and ``guard.*``.

    Raises:
        PearlError: not a run directory, a missing or corrupt file, ``overrides`` that change
            the run (names the keys), or another process writing it (:mod:`pearl_cl.engine.lock`).
        TrainingError: as :func:`~pearl_cl.engine.runner.run`.
    """
    distributed.initialise()
    root = run_root(directory)  # a clear error for a directory that is not a run, before any lock
    with writing(root, distributed.is_main()):
        opened = open_run(directory, settle=True)  # read under the lock: another writer may have gone on
        return _resume(opened, overrides, on_task)


def _resume(opened: OpenRun, overrides: list[str] | None, on_task: OnTask | None) -> RunResult:
    """:func:`resume` of the opened run, its write lock held."""
    config = opened.config
    if overrides:
        config = absolute_checkpoint(checked_overrides(opened, overrides))
    with deterministic(), placed(config):
        peak = metrics.reset_peak_rss()
        bench = benchmark_for(config)
        progress = opened.progress or fresh_progress(bench)
        learner = load_learner(config, bench, opened.store, progress)
        if DATA_RECORD not in opened.store.files:  # a run from before pearl-cl kept it
            opened.store.write_json(DATA_RECORD, describe(bench))
        state = RunState(config, bench, opened.store, learner, progress, peak)
        return learn_tasks(state, default_hooks(config, opened.store.root, on_task))


def rollback(directory: str | Path, to_task: int) -> RunResult:
    """Remove every task after task ``to_task`` (1-based) from the run in ``directory``: their
    files are deleted and every table is rewritten as it was after task ``to_task``, so that
    :func:`resume` continues from there.

    Raises:
        PearlError: not a run directory, a missing or corrupt file, ``to_task`` outside
            ``[1, tasks learned − 1]``, or another process writing it.
    """
    root = run_root(directory)
    with writing(root):
        return _rollback(open_run(directory, settle=True), to_task)


def _rollback(opened: OpenRun, to_task: int) -> RunResult:
    """:func:`rollback` of the opened run, its write lock held."""
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
    result = write_outputs(opened.store, opened.config, bench.source, progress, learner, _kept_peak(opened.store.root),
                           status=f"incomplete: {to_task} of {len(bench.tasks)} tasks learned (rolled back from {learned})")
    keep_steps(opened.store, {r.task for r in progress.records})
    for task in bench.tasks[to_task:learned]:
        opened.store.delete(f"tasks/{task.name}.safetensors")
    return RunResult.of(opened.store.root, progress, result)


def _kept_peak(root: Path) -> dict[str, Any] | bool:
    """The run's own entries of where it ran (:data:`~pearl_cl.engine.outputs.MACHINE_KEYS`:
    device, precision, peak memory) from its ``metrics.json`` (for a rollback, which trains
    nothing), or False when that file is unreadable or has no peak memory."""
    try:
        old = json.loads((root / METRICS).read_text())
        return {k: old[k] for k in MACHINE_KEYS if k in old} if "peak_memory_bytes" in old else False
    except (OSError, ValueError, TypeError):
        return False


def _failing_files(root: Path) -> list[str]:
    """The files of ``root``'s manifest that are missing or fail their checksum (read only); none
    when the manifest itself cannot be read."""
    try:
        return ReplicaStore(root).verify()
    except PearlError:
        return []


def inspect(directory: str | Path) -> tuple[RunResult, list[str]]:
    """The saved run in ``directory`` as a :class:`~pearl_cl.engine.engine.RunResult` (from
    ``progress.json`` and ``metrics.json``, no data loaded, no model built), and the files that
    fail their checksum or are missing.

    Raises:
        PearlError: not a run directory, no task learned yet, ``config.yaml`` or
            ``progress.json`` corrupt (the message lists every file that fails its checksum), or
            ``metrics.json`` unreadable.
    """
    try:
        opened = open_run(directory)
    except PearlError as exc:
        bad = _failing_files(Path(directory))
        if not bad:
            raise
        raise PearlError(f"{exc}. Files that fail {MANIFEST}: {', '.join(bad)}") from exc
    if opened.progress is None or not opened.progress.learned:
        raise PearlError(f"{directory} has no task learned yet")
    try:
        result = json.loads((opened.store.root / METRICS).read_text())
    except (OSError, ValueError) as exc:
        raise PearlError(f"{opened.store.root / METRICS} is unreadable ({exc}); pearl-cl run --resume rewrites it") from exc
    return RunResult.of(opened.store.root, opened.progress, result), opened.store.verify()
