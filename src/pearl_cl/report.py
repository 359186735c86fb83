"""Console tables from a finished run (our design; plots come in a later issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pearl_cl.methods import TaskRecord
from pearl_cl.metrics import percent_of
from pearl_cl.runner import SCENARIO, RunResult

if TYPE_CHECKING:
    from pearl_cl.compare import Comparison


def _percent(value: float | None) -> str:
    """``value`` with two decimals, ``-`` when undefined (None or NaN)."""
    return "-" if value is None or np.isnan(value) else f"{value:.2f}"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, with a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if k == 0 else str(c).rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def task_table(result: RunResult) -> str:
    """One row per task: classes, Task-IL and routed (class-/domain-IL) accuracy at the end,
    routing accuracy at the end, ranks, cost."""
    acc, n = result.accuracy[SCENARIO], len(result.records)
    routed_name = _routed_scenario(result)
    routed = result.accuracy[routed_name]
    backbone = result.metrics["backbone_parameters"]
    seconds = result.metrics["seconds_per_task"]
    rows = []
    for i, r in enumerate(result.records):
        ranks = [lr.rank for lr in r.ranks.values()]
        rank_text = "reference" if r.reference else (
            f"{sum(ranks)} ({sum(x > 0 for x in ranks)}/{len(ranks)} layers, max {max(ranks)})" if ranks else "-")
        rows.append([r.task, ",".join(map(str, r.classes)), f"{acc[i, i]:.2f}", f"{acc[n - 1, i]:.2f}",
                     f"{routed[n - 1, i]:.2f}", _percent(result.routing[n - 1, i]), rank_text,
                     f"{r.parameters['total']:,}", f"{percent_of(r.parameters['total'], backbone):.2f}", f"{seconds[i]['total']:.1f}"])
    return text_table(["task", "classes", "task-il@learned %", "task-il@end %", f"{routed_name}@end %", "routed right %",
                   "rank sum (adapted layers)", "params added",
                   "% backbone", "seconds"], rows)


def rank_table(result: RunResult) -> str:
    """Rank chosen per layer (rows) and task (columns), with the probe's proximity in brackets."""
    later = [r for r in result.records if not r.reference and r.ranks]
    if not later:
        return ""
    layers = list(later[0].ranks)
    rows = [[layer] + [f"{r.ranks[layer].rank} ({r.ranks[layer].proximity:.3f})" for r in later] for layer in layers]
    return text_table(["layer: rank (proximity)"] + [r.task for r in later], rows)


def _routed_scenario(result: RunResult) -> str:
    """The run's scenario without task labels (``class-il`` or ``domain-il``)."""
    return result.metrics["routing"]["scenario"]


def summary(result: RunResult) -> str:
    """The run's closing summary: task table, rank table and the headline metrics, Task-IL and
    the routed scenario side by side."""
    m = result.metrics
    routed = _routed_scenario(result)
    s, c = m["scenarios"][SCENARIO], m["scenarios"][routed]
    added = m["parameters_added_after_reference"]
    total_seconds = sum(t["total"] for t in m["seconds_per_task"])
    rows = [[label, f"{s[key]:.2f}", f"{c[key]:.2f}"] for label, key in (
        ("average accuracy %", "average_accuracy"), ("average incremental accuracy %", "average_incremental_accuracy"),
        ("forgetting (pp)", "forgetting"), ("BWT (pp)", "bwt"))]
    routing = m["routing"]["accuracy"]
    rows.append(["routing accuracy %", "-", f"{routing:.2f} ({m['routing']['router']})" if routing is not None
                 else f"- ({m['routing']['router']})"])
    metric_table = text_table(["metric", SCENARIO, routed], rows)
    costs = text_table(["cost", "value"], [
        ["params added after reference", f"{added['count']:,} ({added['percent_of_backbone']:.2f}% of {m['backbone_parameters']:,})"],
        ["state kept (numbers)", f"{max(m['state_numbers']['per_task'].values(), default=0):,}"],
        ["peak memory MiB", f"{m['peak_memory_bytes'] / 2**20:.0f}"],
        ["seconds (all tasks)", f"{total_seconds:.1f}"],
    ])
    headline = metric_table + "\n\n" + costs
    parts = [f"{m['benchmark']} · {m['method']} · seed {m['seed']} · {len(result.records)} tasks · data: {m['data_source']}",
             task_table(result)]
    ranks = rank_table(result)
    if ranks:
        parts.append(ranks)
    parts += [headline, f"run directory: {result.directory}"]
    return "\n\n".join(parts)


def task_line(record: TaskRecord, acc: np.ndarray) -> str:
    """One line after a task: its Task-IL test accuracy, ranks and parameters added."""
    ranks = [r.rank for r in record.ranks.values()]
    if record.reference:
        what = "first task (all weights)"
    elif ranks:
        what = f"rank sum {sum(ranks)} over {sum(r > 0 for r in ranks)}/{len(ranks)} layers"
    else:
        what = "all weights"
    return (f"{record.task} (classes {','.join(map(str, record.classes))}): {what}, {record.parameters['total']:,} params, "
            f"test acc {acc[-1, -1]:.2f}%, average so far {np.mean(acc[-1]):.2f}%")


def format_matrix(acc: np.ndarray) -> str:
    """The accuracy matrix as text, ``-`` for tasks not yet seen."""
    n = acc.shape[0]
    rows = [[f"after task{i + 1}"] + ["-" if np.isnan(v) else f"{v:.2f}" for v in acc[i]] for i in range(n)]
    return text_table(["R[i, j] %"] + [f"task{j + 1}" for j in range(n)], rows)


def _mean_std(entry: dict, column: str, digits: int = 2) -> str:
    """``mean ± std`` of ``column`` in an aggregated row (``-`` when undefined; no ± for one seed)."""
    mean, std = entry[f"{column}_mean"], entry[f"{column}_std"]
    if mean is None:
        return "-"
    return f"{mean:,.{digits}f}" if entry["seeds"] == 1 else f"{mean:,.{digits}f} ± {std:,.{digits}f}"


def compare_table(comparison: Comparison) -> str:
    """The comparison of :func:`pearl_cl.compare.compare` as one table: mean ± std over seeds."""
    methods = comparison.methods
    routed = methods[0]["scenario"]
    rows = [[e["method"] + (f" (r={'/'.join(map(str, e['ranks']))})" if e["ranks"] else ""),
             _mean_std(e, "task_il_accuracy_pct"), _mean_std(e, "routed_accuracy_pct"), _mean_std(e, "task_il_forgetting_pp"),
             _mean_std(e, "routed_forgetting_pp"), _mean_std(e, "routed_bwt_pp"), _mean_std(e, "params_added", 0),
             _mean_std(e, "params_added_pct_of_backbone"), _mean_std(e, "state_numbers", 0), _mean_std(e, "peak_memory_mib", 0),
             _mean_std(e, "learn_seconds", 1), _mean_std(e, "seconds", 1)]
            for e in methods]
    seeds = sorted({r["seed"] for r in comparison.runs})
    header = ["method", "Task-IL acc %", f"{routed} acc %", "Task-IL forgetting", f"{routed} forgetting",
              f"{routed} BWT", "params added", "% of backbone", "state kept", "peak MiB", "learn s", "total s"]
    legend = "\n".join([
        f"mean ± std over seeds {', '.join(map(str, seeds))}; forgetting and BWT in percentage points; params added after",
        "the first task; state kept: numbers a method stores besides parameters (EWC's Fisher and anchor, SI's",
        "importances, LwF's old network, Joint's images); learn s: training, probe and rank step; total s: also the",
        "evaluation of every task seen after each task. Single-head methods (finetune, joint, ewc, si, lwf) get",
        "Task-IL by masking their one head to the task's classes.",
    ])
    return "\n\n".join([legend, text_table(header, rows),
                         f"comparison directory: {comparison.directory} (compare.csv, compare.json, runs/)"])


def compare_line(row: dict) -> str:
    """One line after each run of a comparison."""
    return (f"{row['method']} seed {row['seed']}: Task-IL {row['task_il_accuracy_pct']:.2f}%, "
            f"{row['scenario']} {row['routed_accuracy_pct']:.2f}%, params added {row['params_added']:,}, "
            f"{row['seconds']:.1f} s")
