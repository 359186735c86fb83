"""Run several methods on one benchmark over several seeds, one after another in this process or
``--jobs K`` at once in worker processes, and tabulate them (our design; the command
``pearl-cl compare``).

Every run is an ordinary :func:`pearl_cl.engine.runner.run` with the same config except
``method``, ``seed``, ``out`` and the config values of the method's label, so all methods see
the same benchmark, backbone, data order and seeds. Labels are registered method names or the
variants a method declares (:mod:`pearl_cl.commands.comparison`); a matched variant runs after
its seed's budget run has finished, at the setting the method derives from it.

The comparison directory holds ``runs/<label>-seed<k>/`` (one run directory each),
``compare_runs.csv`` (one row per run), ``compare.csv`` (mean and standard deviation per method)
and ``compare.json`` (both), rewritten atomically after every run, and at the end the plots and
``report.md`` of :func:`pearl_cl.commands.report.write_report`.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pearl_cl.commands.comparison import Comparison, MethodSpec, per_scenario
from pearl_cl.commands.report import write_report
from pearl_cl.config import SCENARIOS, RunConfig, updated, validate
from pearl_cl.engine.engine import RunResult
from pearl_cl.engine.progress import SCENARIO
from pearl_cl.engine.runner import run
from pearl_cl.engine.store import RunStore
from pearl_cl.errors import ConfigError, PearlError
from pearl_cl.registry import METHODS


def run_row(label: str, result: RunResult, setting: str) -> dict[str, Any]:
    """The numbers one run contributes to the comparison (units in the key names); ``setting``
    is the method's distinguishing setting (``r=4``, or ``""``)."""
    m = result.metrics
    routed = m["routing"]["scenario"]
    row: dict[str, Any] = {"method": label, "seed": m["seed"], "setting": setting, "scenario": routed,
                           "training_scenario": m.get("training_scenario", routed)}
    for name, key in ((SCENARIO, "task_il"), (routed, "routed")):
        s = m["scenarios"][name]
        row.update({f"{key}_accuracy_pct": s["average_accuracy"], f"{key}_forgetting_pp": s["forgetting"],
                    f"{key}_bwt_pp": s["bwt"]})
    for name in SCENARIOS[1:]:
        row[f"{name.replace('-', '_')}_accuracy_pct"] = m["scenarios"].get(name, {}).get("average_accuracy")
    row["task_il_fwt_pp"] = m["scenarios"][SCENARIO].get("fwt")
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


NUMERIC = ("task_il_accuracy_pct", "routed_accuracy_pct", "domain_il_accuracy_pct", "class_il_accuracy_pct",
           "task_il_forgetting_pp", "routed_forgetting_pp", "task_il_bwt_pp", "routed_bwt_pp", "task_il_fwt_pp",
           "routing_accuracy_pct", "params_added", "params_added_pct_of_backbone", "state_numbers",
           "peak_memory_mib", "learn_seconds", "seconds")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and training scenario (in first-seen order): ``seeds``, the settings used, and
    the mean and sample standard deviation (ddof 1; 0 for one seed) of every :data:`NUMERIC`
    column, as ``<column>_mean`` and ``<column>_std`` (None where a column is undefined, e.g.
    routing for a single-head method)."""
    out = []
    for label, trained in dict.fromkeys((r["method"], r["training_scenario"]) for r in rows):
        group = [r for r in rows if (r["method"], r["training_scenario"]) == (label, trained)]
        entry: dict[str, Any] = {"method": label, "seeds": len(group), "scenario": group[0]["scenario"],
                                 "training_scenario": trained,
                                 "settings": list(dict.fromkeys(r["setting"] for r in group if r["setting"]))}
        for column in NUMERIC:
            values = [r[column] for r in group if r[column] is not None]
            entry[f"{column}_mean"] = float(np.mean(values)) if values else None
            entry[f"{column}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
        out.append(entry)
    return out


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
            on_run: Callable[[dict[str, Any]], None] | None = None, jobs: int = 1,
            scenarios: dict[str, RunConfig] | None = None) -> Comparison:
    """Run every spec for every seed and write the comparison directory.

    ``base`` is the config every run starts from; with ``scenarios`` (scenario → the config its
    runs start from), each single-head method runs once per scenario from that scenario's
    config, in ``runs/<label>-<scenario>-seed<k>/``, and each method with a branch per task runs
    once from ``base`` (:func:`~pearl_cl.commands.comparison.per_scenario`). ``on_run(row)`` is
    called after each run.
    ``jobs`` runs start at once, each in its own process with ``torch.get_num_threads() // jobs``
    threads (at least 1); with ``jobs`` = 1 they run one after another in this process, seed-major.
    Either way the rows come out in seed-major, spec order, and a matched variant starts once its
    seed's budget run has finished. A different thread count may change the last digits of a run's
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
    bases = {None: base, **(scenarios or {})}
    specs = per_scenario(specs, list(scenarios)) if scenarios else specs
    for spec in specs:
        for seed in seeds:
            validate(updated(bases[spec.scenario], {**spec.values, "method": spec.method, "seed": seed}))
    directory = Path(out) if out else default_compare_dir(base.benchmark)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise PearlError(f"comparison directory {directory} already exists and is not empty; choose a new one with --out DIR")
    store = RunStore(directory)
    settings = {"benchmark": base.benchmark, "methods": list(dict.fromkeys(s.label for s in specs)), "seeds": seeds,
                "config": base.to_dict(), "scenarios": list(scenarios or [])}
    order = [(seed, spec) for seed in seeds for spec in specs]
    done: dict[tuple[int, str], dict[str, Any]] = {}
    results: dict[tuple[int, str], RunResult] = {}

    def config_for(seed: int, spec: MethodSpec) -> tuple[RunConfig, str]:
        values = spec.values
        if spec.budget is not None:
            values = METHODS.get(spec.method).matched_values(results[(seed, spec.budget)])
        config = updated(bases[spec.scenario], {**values, "method": spec.method, "seed": seed,
                                                "out": str(directory / "runs" / f"{spec.key}-seed{seed}")})
        return config, METHODS.get(spec.method).setting(config)

    def finished(seed: int, spec: MethodSpec, result: RunResult, setting: str) -> None:
        results[(seed, spec.key)] = result
        done[(seed, spec.key)] = run_row(spec.label, result, setting)
        rows = [done[(s, sp.key)] for s, sp in order if (s, sp.key) in done]
        _write(store, rows, aggregate(rows), settings)
        if on_run is not None:
            on_run(done[(seed, spec.key)])

    if jobs == 1:
        for seed, spec in order:
            config, setting = config_for(seed, spec)
            finished(seed, spec, run(config), setting)
    else:
        _run_parallel(order, jobs, config_for, finished)
    rows = [done[(seed, spec.key)] for seed, spec in order]
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
                  config_for: Callable[[int, MethodSpec], tuple[RunConfig, str]],
                  finished: Callable[[int, MethodSpec, RunResult, str], None]) -> None:
    """Run ``order`` in ``jobs`` worker processes (spawned: no state shared with this one), each
    matched run after its seed's budget run; ``finished`` is called in this process.
    After the first error no new run starts; the runs already going finish and are recorded,
    then the error is raised."""
    import concurrent.futures as futures
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    waiting = list(order)
    running: dict[futures.Future, tuple[int, MethodSpec, str]] = {}
    error: BaseException | None = None
    with futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while running or (waiting and error is None):
            if error is None:
                pending = {(seed, spec.key) for seed, spec in waiting} | {(s, sp.key) for s, sp, _ in running.values()}
                for seed, spec in [job for job in waiting if (job[0], job[1].budget) not in pending]:
                    config, setting = config_for(seed, spec)
                    running[pool.submit(_run_in_process, config, threads)] = (seed, spec, setting)
                    waiting.remove((seed, spec))
            ready, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in ready:
                seed, spec, setting = running.pop(future)
                try:
                    finished(seed, spec, future.result(), setting)
                except BaseException as exc:  # recorded; raised once the runs already going have finished
                    if error is None and isinstance(exc, BrokenProcessPool):
                        error = PearlError(f"a worker process died while {spec.label} seed {seed} ran (killed for "
                                           f"memory?); rerun with a smaller --jobs")
                        error.__cause__ = exc
                    error = error or exc
                    pool.shutdown(wait=False, cancel_futures=True)
    if error is not None:
        raise error



