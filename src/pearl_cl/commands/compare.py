"""Run several methods on one benchmark over several seeds, one after another in this process or
``--jobs K`` at once in worker processes, and tabulate them (our design; the command
``pearl-cl compare``).

Every run is an ordinary :func:`pearl_cl.engine.runner.run` with the same config except ``method``,
``seed`` and ``out``, so all methods see the same benchmark, backbone, data order and seeds.
Method names are the keys of :data:`pearl_cl.methods.METHODS`, plus ``lora-rK`` (fixed-rank
LoRA at rank K) and ``lora-matched``: fixed-rank LoRA at the rank whose adapter parameters come
closest to what PEARL added per task in the same seed (:func:`pearl_cl.core.rank.matched_fixed_rank`,
at least rank 1; norm and head parameters are the same for both).

The comparison directory holds ``runs/<label>-seed<k>/`` (one run directory each),
``compare_runs.csv`` (one row per run), ``compare.csv`` (mean and standard deviation per method)
and ``compare.json`` (both), rewritten atomically after every run, and at the end the plots and
``report.md`` of :func:`pearl_cl.commands.report.write_report`.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pearl_cl.config import RunConfig
from pearl_cl.errors import ConfigError, PearlError
from pearl_cl.methods import METHODS
from pearl_cl.core.rank import matched_fixed_rank
from pearl_cl.commands.report import write_report
from pearl_cl.engine.runner import SCENARIO, RunResult, check, run
from pearl_cl.engine.store import RunStore

ALL_METHODS = "finetune,joint,ewc,si,lwf,separate,lora-r1,lora-r4,lora-r16,pearl,lora-matched"
MATCHED = "lora-matched"


@dataclass(frozen=True)
class MethodSpec:
    """One row of the comparison: its ``label``, the ``method`` it runs, and for fixed-rank
    LoRA its ``rank`` (None: ``pearl.fixed_rank``, or the matched rank when ``matched``)."""

    label: str
    method: str
    rank: int | None = None
    matched: bool = False


def parse_methods(text: str) -> list[MethodSpec]:
    """``"finetune,lora-r4,pearl,lora-matched"`` → specs, in the given order.

    Raises:
        ConfigError: an unknown or repeated name, an empty list, or ``lora-matched`` without a
            ``pearl`` before it.
    """
    labels = [part.strip() for part in text.split(",") if part.strip()]
    if not labels:
        raise ConfigError(f"--methods is empty; give a comma-separated list, e.g. --methods {ALL_METHODS}")
    specs = []
    for label in labels:
        if label in [s.label for s in specs]:
            raise ConfigError(f"--methods names {label!r} twice")
        fixed = re.fullmatch(r"lora-r([1-9]\d*)", label)
        if label in METHODS:
            specs.append(MethodSpec(label, label))
        elif fixed:
            specs.append(MethodSpec(label, "lora", int(fixed.group(1))))
        elif label == MATCHED:
            if "pearl" not in [s.label for s in specs]:
                raise ConfigError(f"{MATCHED} matches PEARL's parameters: list pearl before it in --methods")
            specs.append(MethodSpec(label, "lora", matched=True))
        else:
            raise ConfigError(f"unknown method {label!r} in --methods; choose from: {', '.join(METHODS)}, "
                              f"lora-rK (K >= 1), {MATCHED}")
    return specs


def adapter_budget(result: RunResult) -> tuple[list[tuple[int, int]], float]:
    """From a PEARL run: the adaptable layers' matrix shapes and the mean LoRA parameters it
    added per adapter task (0 when it learned only the reference task)."""
    later = [r for r in result.records if not r.reference]
    if not later:
        return [], 0.0
    shapes = [lr.shape for lr in later[0].ranks.values()]
    return shapes, float(np.mean([r.parameters["adapter"] for r in later]))


def run_row(label: str, result: RunResult, rank: int | None) -> dict[str, Any]:
    """The numbers one run contributes to the comparison (units in the key names)."""
    m = result.metrics
    routed = m["routing"]["scenario"]
    row: dict[str, Any] = {"method": label, "seed": m["seed"], "rank": rank, "scenario": routed}
    for name, key in ((SCENARIO, "task_il"), (routed, "routed")):
        s = m["scenarios"][name]
        row.update({f"{key}_accuracy_pct": s["average_accuracy"], f"{key}_forgetting_pp": s["forgetting"],
                    f"{key}_bwt_pp": s["bwt"]})
    added = m["parameters_added_after_reference"]
    row.update({
        "routing_accuracy_pct": m["routing"]["accuracy"],
        "params_added": added["count"],
        "params_added_pct_of_backbone": added["percent_of_backbone"],
        "state_numbers": max(m["state_numbers"]["per_task"].values(), default=0),
        "peak_memory_mib": m["peak_memory_bytes"] / 2**20,
        "learn_seconds": sum(t["probe"] + t["rank"] + t["train"] for t in m["seconds_per_task"]),
        "seconds": sum(t["total"] for t in m["seconds_per_task"]),
        "run_directory": str(result.directory),
    })
    return row


NUMERIC = ("task_il_accuracy_pct", "routed_accuracy_pct", "task_il_forgetting_pp", "routed_forgetting_pp", "task_il_bwt_pp",
           "routed_bwt_pp", "routing_accuracy_pct", "params_added", "params_added_pct_of_backbone", "state_numbers",
           "peak_memory_mib", "learn_seconds", "seconds")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method (in first-seen order): ``seeds``, the ranks used, and the mean and sample
    standard deviation (ddof 1; 0 for one seed) of every :data:`NUMERIC` column, as
    ``<column>_mean`` and ``<column>_std`` (None where a column is undefined, e.g. routing for a
    single-head method)."""
    out = []
    for label in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == label]
        entry: dict[str, Any] = {"method": label, "seeds": len(group), "scenario": group[0]["scenario"],
                                 "ranks": sorted({r["rank"] for r in group if r["rank"] is not None})}
        for column in NUMERIC:
            values = [r[column] for r in group if r[column] is not None]
            entry[f"{column}_mean"] = float(np.mean(values)) if values else None
            entry[f"{column}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
        out.append(entry)
    return out


@dataclass
class Comparison:
    """A finished comparison: its directory, one row per run, one aggregated row per method."""

    directory: Path
    runs: list[dict[str, Any]]
    methods: list[dict[str, Any]]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def _write(store: RunStore, runs: list[dict[str, Any]], methods: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    for name, rows in (("compare_runs.csv", runs), ("compare.csv", methods)):
        header = list(rows[0])
        store.write_csv(name, header, [[_cell(r[k]) for k in header] for r in rows])
    store.write_json("compare.json", {"settings": settings, "methods": methods, "runs": runs})


def default_compare_dir(benchmark: str) -> Path:
    """``runs/compare-<benchmark>-<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / f"compare-{benchmark}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def compare(base: RunConfig, specs: list[MethodSpec], seeds: list[int], out: str | Path | None = None,
            on_run: Callable[[dict[str, Any]], None] | None = None, jobs: int = 1) -> Comparison:
    """Run every spec for every seed and write the comparison directory.

    ``base`` is the config every run starts from; ``on_run(row)`` is called after each run.
    ``jobs`` runs start at once, each in its own process with ``torch.get_num_threads() // jobs``
    threads (at least 1); with ``jobs`` = 1 they run one after another in this process, seed-major.
    Either way the rows come out in seed-major, spec order, and ``lora-matched`` starts once its
    seed's PEARL run has finished. A different thread count may change the last digits of a run's
    numbers (floating-point summation order), not its seeds or data.

    Raises:
        ConfigError: invalid ``base``, specs, seeds or ``jobs`` (before anything runs).
        PearlError: ``out`` exists and is not empty; any error a run raises stops the comparison
            (runs not yet started are cancelled, runs already going finish, and the rows of every
            finished run stay written); a worker process that died (e.g. killed for memory).
    """
    if not seeds:
        raise ConfigError("--seeds must be >= 1")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    for spec in specs:
        for seed in seeds:
            check(_with(base, method=spec.method, seed=seed))
    directory = Path(out) if out else default_compare_dir(base.benchmark)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise PearlError(f"comparison directory {directory} already exists and is not empty; choose a new one with --out DIR")
    store = RunStore(directory)
    settings = {"benchmark": base.benchmark, "methods": [s.label for s in specs], "seeds": seeds, "config": base.to_dict()}
    order = [(seed, spec) for seed in seeds for spec in specs]
    done: dict[tuple[int, str], dict[str, Any]] = {}
    budgets: dict[int, tuple[list[tuple[int, int]], float]] = {}

    def config_for(seed: int, spec: MethodSpec) -> tuple[RunConfig, int | None]:
        rank = spec.rank if spec.method != "lora" or spec.rank else base.pearl.fixed_rank
        if spec.matched:
            shapes, per_task = budgets.get(seed, ([], 0.0))
            rank = matched_fixed_rank(shapes, per_task) if shapes else 1
        config = _with(base, method=spec.method, seed=seed, out=str(directory / "runs" / f"{spec.label}-seed{seed}"))
        if rank is not None:
            config.pearl.fixed_rank = rank
        return config, rank

    def finished(seed: int, spec: MethodSpec, result: RunResult, rank: int | None) -> None:
        if spec.method == "pearl":
            budgets[seed] = adapter_budget(result)
        done[(seed, spec.label)] = run_row(spec.label, result, rank)
        rows = [done[(s, sp.label)] for s, sp in order if (s, sp.label) in done]
        _write(store, rows, aggregate(rows), settings)
        if on_run is not None:
            on_run(done[(seed, spec.label)])

    if jobs == 1:
        for seed, spec in order:
            config, rank = config_for(seed, spec)
            finished(seed, spec, run(config), rank)
    else:
        _run_parallel(order, jobs, config_for, finished)
    rows = [done[(seed, spec.label)] for seed, spec in order]
    write_report([directory])
    return Comparison(directory, rows, aggregate(rows))


def _run_in_process(config: RunConfig, threads: int) -> RunResult:
    """One comparison run in a worker process of :func:`_run_parallel`, on ``threads`` threads,
    without progress bars (several would overwrite each other)."""
    import os

    import torch

    os.environ["TQDM_DISABLE"] = "1"
    torch.set_num_threads(threads)
    return run(config)


def _run_parallel(order: list[tuple[int, MethodSpec]], jobs: int,
                  config_for: Callable[[int, MethodSpec], tuple[RunConfig, int | None]],
                  finished: Callable[[int, MethodSpec, RunResult, int | None], None]) -> None:
    """Run ``order`` in ``jobs`` worker processes (spawned: no state shared with this one), each
    ``lora-matched`` run after its seed's PEARL run; ``finished`` is called in this process.
    After the first error no new run starts; the runs already going finish and are recorded,
    then the error is raised."""
    import concurrent.futures as futures
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    waiting = list(order)
    running: dict[futures.Future, tuple[int, MethodSpec, int | None]] = {}
    error: BaseException | None = None
    with futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while running or (waiting and error is None):
            if error is None:
                blocked = {seed for seed, spec in waiting if spec.method == "pearl"}
                blocked |= {seed for seed, spec, _ in running.values() if spec.method == "pearl"}
                for seed, spec in [job for job in waiting if not (job[1].matched and job[0] in blocked)]:
                    config, rank = config_for(seed, spec)
                    running[pool.submit(_run_in_process, config, threads)] = (seed, spec, rank)
                    waiting.remove((seed, spec))
            ready, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in ready:
                seed, spec, rank = running.pop(future)
                try:
                    finished(seed, spec, future.result(), rank)
                except BaseException as exc:  # recorded; raised once the runs already going have finished
                    if error is None and isinstance(exc, BrokenProcessPool):
                        error = PearlError(f"a worker process died while {spec.label} seed {seed} ran (killed for "
                                           f"memory?); rerun with a smaller --jobs")
                        error.__cause__ = exc
                    error = error or exc
                    pool.shutdown(wait=False, cancel_futures=True)
    if error is not None:
        raise error


def _with(config: RunConfig, **values: Any) -> RunConfig:
    """A deep copy of ``config`` with top-level fields replaced."""
    new = copy.deepcopy(config)
    for key, value in values.items():
        setattr(new, key, value)
    return new
