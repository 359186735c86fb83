"""Console tables from a finished run (our design; plots come in a later issue)."""

from __future__ import annotations

import numpy as np

from pearl_cl.methods import TaskRecord
from pearl_cl.metrics import percent_of
from pearl_cl.runner import SCENARIO, RunResult


def _table(header: list[str], rows: list[list[str]]) -> str:
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
        rank_text = "reference" if r.reference else f"{sum(ranks)} ({sum(x > 0 for x in ranks)}/{len(ranks)} layers, max {max(ranks, default=0)})"
        rows.append([r.task, ",".join(map(str, r.classes)), f"{acc[i, i]:.2f}", f"{acc[n - 1, i]:.2f}",
                     f"{routed[n - 1, i]:.2f}", f"{result.routing[n - 1, i]:.2f}", rank_text,
                     f"{r.parameters['total']:,}", f"{percent_of(r.parameters['total'], backbone):.2f}", f"{seconds[i]['total']:.1f}"])
    return _table(["task", "classes", "task-il@learned %", "task-il@end %", f"{routed_name}@end %", "routed right %",
                   "rank sum (adapted layers)", "params added",
                   "% backbone", "seconds"], rows)


def rank_table(result: RunResult) -> str:
    """Rank chosen per layer (rows) and task (columns), with the probe's proximity in brackets."""
    later = [r for r in result.records if not r.reference]
    if not later:
        return ""
    layers = list(later[0].ranks)
    rows = [[layer] + [f"{r.ranks[layer].rank} ({r.ranks[layer].proximity:.3f})" for r in later] for layer in layers]
    return _table(["layer: rank (proximity)"] + [r.task for r in later], rows)


def _routed_scenario(result: RunResult) -> str:
    """The run's scenario without task labels (``class-il`` or ``domain-il``)."""
    return next(name for name in result.accuracy if name != SCENARIO)


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
    rows.append(["routing accuracy %", "-", f"{m['routing']['accuracy']:.2f} ({m['routing']['router']})"])
    metric_table = _table(["metric", SCENARIO, routed], rows)
    costs = _table(["cost", "value"], [
        ["params added after reference", f"{added['count']:,} ({added['percent_of_backbone']:.2f}% of {m['backbone_parameters']:,})"],
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
    what = "reference (all weights)" if record.reference else f"rank sum {sum(ranks)} over {sum(r > 0 for r in ranks)}/{len(ranks)} layers"
    return (f"{record.task} (classes {','.join(map(str, record.classes))}): {what}, {record.parameters['total']:,} params, "
            f"test acc {acc[-1, -1]:.2f}%, average so far {np.mean(acc[-1]):.2f}%")


def format_matrix(acc: np.ndarray) -> str:
    """The accuracy matrix as text, ``-`` for tasks not yet seen."""
    n = acc.shape[0]
    rows = [[f"after task{i + 1}"] + ["-" if np.isnan(v) else f"{v:.2f}" for v in acc[i]] for i in range(n)]
    return _table(["R[i, j] %"] + [f"task{j + 1}" for j in range(n)], rows)
