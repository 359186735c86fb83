"""The files a run directory derives from its progress: the CSV tables and ``metrics.json``,
then ``progress.json`` last, the commit point (our design; layout in docs/operations.md)."""

from __future__ import annotations

import math
from typing import Any

from pearl_cl import device
from pearl_cl.config import RunConfig
from pearl_cl.learning import distributed, metrics
from pearl_cl.engine.progress import PROGRESS, SCENARIO, Progress
from pearl_cl.engine.store import RunStore
from pearl_cl.methods.record import COUNT_KEYS

PeakMemory = bool | dict[str, Any]
"""Whether the process's peak memory was reset at the run's start, or the :data:`MACHINE_KEYS`
entries of ``metrics.json`` to keep (a rollback, which trains nothing, keeps the run's own)."""

METRICS = "metrics.json"  # the run's headline figures
MACHINE_KEYS = ("device", "precision", "peak_memory_bytes", "peak_memory_scope", "peak_gpu_memory_bytes")
"""The entries of ``metrics.json`` that say where the run computed and what it held at most."""


def _machine(peak: bool) -> dict[str, Any]:
    """The :data:`MACHINE_KEYS` entries of this process (the largest over processes)."""
    entries = {"device": str(device.current()), "precision": device.precision(),
               "peak_memory_bytes": distributed.maximum(metrics.peak_rss_bytes()),
               "peak_memory_scope": ("this run" if peak else "this process (the peak could not be reset)")
                                    + (f", the largest of {distributed.world_size()} processes" if distributed.active() else "")}
    gpu = device.peak_memory_bytes()
    if gpu is not None:
        entries["peak_gpu_memory_bytes"] = distributed.maximum(gpu)
    return entries


def _number(value: float) -> float | None:
    """``value``, or None when it is NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


def _csv(value: float, digits: int) -> str:
    """A CSV cell: ``value`` with ``digits`` decimals, empty when NaN."""
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def metrics_json(config: RunConfig, source: str, progress: Progress, learner, peak: PeakMemory,
                 status: str | None) -> dict[str, Any]:
    """The content of ``metrics.json``: status, the scenario the run was trained for, CL metrics
    per scenario evaluated (%, forgetting, BWT and, for Task-IL, FWT — null where not measured —
    in percentage points), routing accuracy, parameters added per task (count and % of the
    backbone), state kept, seconds per task, validation accuracy, retries, training loss and
    peak memory (bytes)."""
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
        "training_scenario": config.scenario or progress.scenario,
        "scenarios": {name: {**metrics.summarise(acc),
                             **({"fwt": _number(progress.forward_transfer())} if name == SCENARIO else {}),
                             "units": "% (forgetting, bwt and fwt: percentage points)"}
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
        **(peak if isinstance(peak, dict) else _machine(peak)),
    }


def write_outputs(store: RunStore, config: RunConfig, source: str, progress: Progress, learner, peak: PeakMemory,
                  status: str | None = None) -> dict[str, Any]:
    """Rewrite every file derived from ``progress``: the CSVs, ``metrics.json``, then
    ``progress.json`` last (the commit point). Returns the metrics."""
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
    result = metrics_json(config, source, progress, learner, peak, status)
    store.write_json(METRICS, result)
    store.write_json(PROGRESS, progress.to_json())
    return result
