"""Tables of a finished run or comparison, for the console and for ``report.md`` (our design).

Each table is built once as a header and rows of strings (``*_rows``) and laid out either as
aligned text (:func:`text_table`, the console) or as Markdown (:func:`markdown_table`,
``report.md``), so both show the same numbers. :func:`write_report` writes the plots of
:mod:`pearl_cl.commands.plots` and ``report.md`` for a run or comparison directory (``pearl-cl report``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from pearl_cl.commands.comparison import Comparison, budget_labels, ordered_methods, parse_methods
from pearl_cl.engine.engine import RunResult
from pearl_cl.learning.metrics import percent_of
from pearl_cl.engine.lock import writing
from pearl_cl.engine.operations import inspect
from pearl_cl.engine.outputs import METRICS
from pearl_cl.config import SCENARIOS
from pearl_cl.engine.progress import SCENARIO
from pearl_cl.engine.store import MANIFEST, RunStore
from pearl_cl.errors import PearlError
from pearl_cl.methods.record import TaskRecord
from pearl_cl.registry import METHODS

if TYPE_CHECKING:
    from pearl_cl.commands.plots import Point

Table = tuple[list[str], list[list[str]]]  # header, rows
REPORT = "report.md"


def _percent(value: float | None) -> str:
    """``value`` with two decimals, ``-`` when undefined (None or NaN)."""
    return "-" if value is None or np.isnan(value) else f"{value:.2f}"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned others, with a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if k == 0 else str(c).rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """The same table in Markdown: left-aligned first column, right-aligned others (``|`` in a
    cell is escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"] + [line(r) for r in rows])


def task_rows(result: RunResult, proximity: bool = False) -> Table:
    """One row per task: classes, Task-IL and routed (class-/domain-IL) accuracy at the end,
    routing accuracy at the end, ranks, cost; with ``proximity``, also the range of the probe's
    proximity over the task's layers."""
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
        closeness = [lr.proximity for lr in r.ranks.values()]
        extra = [f"{min(closeness):.3f}–{max(closeness):.3f}" if closeness else "-"] if proximity else []
        rows.append([r.task, ",".join(map(str, r.classes)), f"{acc[i, i]:.2f}", f"{acc[n - 1, i]:.2f}",
                     f"{routed[n - 1, i]:.2f}", _percent(result.routing[n - 1, i]), rank_text, *extra,
                     f"{r.parameters['total']:,}", f"{percent_of(r.parameters['total'], backbone):.2f}", f"{seconds[i]['total']:.1f}"])
    header = ["task", "classes", "task-il@learned %", "task-il@end %", f"{routed_name}@end %", "routed right %",
              "rank sum (adapted layers)", *(["proximity min–max"] if proximity else []), "params added",
              "% backbone", "seconds"]
    return header, rows


def task_table(result: RunResult) -> str:
    """:func:`task_rows` as console text."""
    return text_table(*task_rows(result))


def rank_rows(result: RunResult) -> Table | None:
    """Rank chosen per layer (rows) and task (columns), with the probe's proximity in brackets;
    None when the run has no ranks."""
    later = [r for r in result.records if not r.reference and r.ranks]
    if not later:
        return None
    layers = list(later[0].ranks)
    rows = [[layer] + [f"{r.ranks[layer].rank} ({r.ranks[layer].proximity:.3f})" for r in later] for layer in layers]
    return ["layer: rank (proximity)"] + [r.task for r in later], rows


def rank_table(result: RunResult) -> str:
    """:func:`rank_rows` as console text (empty when the run has no ranks)."""
    table = rank_rows(result)
    return text_table(*table) if table else ""


def _routed_scenario(result: RunResult) -> str:
    """The run's scenario without task labels (``class-il`` or ``domain-il``)."""
    return result.metrics["routing"]["scenario"]


def headline_rows(result: RunResult) -> tuple[Table, Table]:
    """The headline metrics, one column per scenario evaluated (Task-IL, then domain-IL and
    class-IL where counted; %, forgetting, BWT and FWT in percentage points), and the costs
    (parameters, state, memory, seconds)."""
    m = result.metrics
    routed = _routed_scenario(result)
    names = [SCENARIO, *[n for n in SCENARIOS[1:] if n in m["scenarios"] and n != routed], routed]
    added = m["parameters_added_after_reference"]
    total_seconds = sum(t["total"] for t in m["seconds_per_task"])
    rows = [[label, *(f"{m['scenarios'][n][key]:.2f}" for n in names)] for label, key in (
        ("average accuracy %", "average_accuracy"), ("average incremental accuracy %", "average_incremental_accuracy"),
        ("forgetting (pp)", "forgetting"), ("BWT (pp)", "bwt"))]
    fwt = m["scenarios"][SCENARIO].get("fwt")
    rows.append(["FWT (pp)", "-" if fwt is None else f"{fwt:.2f}", *("-" for _ in names[1:])])
    routing = m["routing"]["accuracy"]
    rows.append(["routing accuracy %", *("-" for _ in names[:-1]), f"{routing:.2f} ({m['routing']['router']})"
                 if routing is not None else f"- ({m['routing']['router']})"])
    costs = [
        ["params added after reference", f"{added['count']:,} ({added['percent_of_backbone']:.2f}% of {m['backbone_parameters']:,})"],
        ["state kept (numbers)", f"{max(m['state_numbers']['per_task'].values(), default=0):,}"],
        ["peak memory MiB", f"{m['peak_memory_bytes'] / 2**20:.0f}"],
        ["seconds (all tasks)", f"{total_seconds:.1f}"],
    ]
    return (["metric", *names], rows), (["cost", "value"], costs)


def title_line(result: RunResult) -> str:
    """``benchmark · method · seed · tasks · device (precision) · data source`` of a run (runs
    written before pearl-cl recorded the device ran on the CPU in fp32)."""
    m = result.metrics
    return (f"{m['benchmark']} · {m['method']} · seed {m['seed']} · {len(result.records)} tasks · "
            f"{m.get('device', 'cpu')} ({m.get('precision', 'fp32')}) · data: {m['data_source']}")


def summary(result: RunResult) -> str:
    """The run's closing summary: task table, rank table and the headline metrics, Task-IL and
    the routed scenario side by side."""
    metric_table, costs = headline_rows(result)
    parts = [title_line(result), task_table(result)]
    ranks = rank_table(result)
    if ranks:
        parts.append(ranks)
    parts += [text_table(*metric_table) + "\n\n" + text_table(*costs), f"run directory: {result.directory}"]
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


def _plus_minus(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``mean ± std`` (``-`` when ``mean`` is undefined; no ± when ``std`` is None)."""
    if mean is None:
        return "-"
    return f"{mean:,.{digits}f}" if std is None else f"{mean:,.{digits}f} ± {std:,.{digits}f}"


def _mean_std(entry: dict, column: str, digits: int = 2) -> str:
    """``mean ± std`` of ``column`` in an aggregated row (``-`` when undefined; no ± for one seed)."""
    return _plus_minus(entry[f"{column}_mean"], None if entry["seeds"] == 1 else entry[f"{column}_std"], digits)


def method_label(method: str, settings: Sequence[str]) -> str:
    """A method's label with its settings, e.g. ``lora (r=4)``, ``lora-matched (r=2/r=3)``."""
    return method + (f" ({'/'.join(settings)})" if settings else "")


def _settings(entry: dict) -> list[str]:
    """An aggregated row's settings; a comparison of pearl-cl 0.1 lists fixed ``ranks`` instead."""
    return entry["settings"] if "settings" in entry else [f"r={r}" for r in entry.get("ranks", [])]


def compare_rows(comparison: Comparison) -> Table:
    """One row per method of :func:`pearl_cl.commands.compare.compare`: mean ± std over seeds."""
    methods = comparison.methods
    routed = methods[0]["scenario"]
    several = len({e.get("training_scenario") for e in methods}) > 1
    rows = [[method_label(e["method"], _settings(e)) + (f" [{e['training_scenario']}]" if several else ""),
             _mean_std(e, "task_il_accuracy_pct"), _mean_std(e, "routed_accuracy_pct"), _mean_std(e, "task_il_forgetting_pp"),
             _mean_std(e, "routed_forgetting_pp"), _mean_std(e, "routed_bwt_pp"), _mean_std(e, "task_il_fwt_pp"),
             _mean_std(e, "params_added", 0),
             _mean_std(e, "params_added_pct_of_backbone"), _mean_std(e, "state_numbers", 0), _mean_std(e, "peak_memory_mib", 0),
             _mean_std(e, "learn_seconds", 1), _mean_std(e, "seconds", 1)]
            for e in methods]
    header = ["method", "Task-IL acc %", f"{routed} acc %", "Task-IL forgetting", f"{routed} forgetting",
              f"{routed} BWT", "Task-IL FWT", "params added", "% of backbone", "state kept", "peak MiB", "learn s", "total s"]
    return header, rows


def compare_legend(comparison: Comparison) -> str:
    """What the columns of :func:`compare_rows` mean (seeds, units)."""
    seeds = sorted({r["seed"] for r in comparison.runs})
    single = ", ".join(name for name, cls in ordered_methods() if cls.single_head)
    return "\n".join([
        f"mean ± std over seeds {', '.join(map(str, seeds))}; forgetting, BWT and FWT (- : not measurable) in percentage "
        "points; params added after",
        "the first task; state kept: numbers a method stores besides parameters (EWC's Fisher and anchor, SI's",
        "importances, LwF's old network, Joint's images); learn s: training, probe and rank step; total s: also the",
        f"evaluation of every task seen after each task. Single-head methods ({single}) get",
        "Task-IL by masking their one head to the task's classes.",
    ])


def scenario_rows(comparison: Comparison) -> Table:
    """One row per method label, a column per scenario (van de Ven & Tolias 2019): each
    scenario's average accuracy (mean ± std over seeds) from the runs trained for it, or, for a
    method with a branch per task (one run, marked †), from its one run; then the Task-IL
    forward transfer of the Task-IL runs."""
    entries = comparison.methods
    rows = []
    for label in dict.fromkeys(e["method"] for e in entries):
        own = [e for e in entries if e["method"] == label]
        one_run = len(own) == 1 and len({e.get("training_scenario") for e in entries}) > 1
        cells = []
        for name in (*SCENARIOS, SCENARIO):
            match = own[0] if one_run else next((e for e in own if e.get("training_scenario") == name), None)
            column = "task_il_fwt_pp" if len(cells) == len(SCENARIOS) else f"{name.replace('-', '_')}_accuracy_pct"
            cells.append("-" if match is None else _mean_std(match, column))
        rows.append([label + (" †" if one_run else ""), *cells])
    return ["method", *SCENARIOS, "Task-IL FWT"], rows


def compare_table(comparison: Comparison) -> str:
    """The comparison of :func:`pearl_cl.commands.compare.compare` as one table: mean ± std over
    seeds; when it trained several scenarios, first the table of :func:`scenario_rows`."""
    parts = [compare_legend(comparison), text_table(*compare_rows(comparison))]
    if len({e.get("training_scenario") for e in comparison.methods}) > 1:
        parts += ["accuracy % per scenario, each single-head method trained for it; † one run of a method with a "
                  "branch per task reports every scenario; FWT in percentage points (- : not measurable)",
                  text_table(*scenario_rows(comparison))]
    return "\n\n".join([*parts, f"comparison directory: {comparison.directory} (compare.csv, compare.json, runs/)"])


def compare_line(row: dict) -> str:
    """One line after each run of a comparison."""
    return (f"{row['method']} seed {row['seed']}: Task-IL {row['task_il_accuracy_pct']:.2f}%, "
            f"{row['scenario']} {row['routed_accuracy_pct']:.2f}%, params added {row['params_added']:,}, "
            f"{row['seconds']:.1f} s")


@dataclass
class _Sources:
    """What a report covers: the ``main`` run (heatmaps, tables), the files of it that fail
    their checksum, the points of the accuracy-against-parameters plot, and the comparison
    when the first directory is one."""

    main: RunResult
    bad: list[str]
    points: list[Point]
    comparison: Comparison | None


def _kind(directory: Path) -> str:
    """``run`` or ``comparison``.

    Raises:
        PearlError: ``directory`` is neither (names it and what would fix it).
    """
    if (directory / "compare.json").is_file() and (directory / "runs").is_dir():
        return "comparison"
    if (directory / MANIFEST).is_file() and (directory / "config.yaml").is_file():
        return "run"
    what = ("does not exist" if not directory.exists() else "is not a folder" if not directory.is_dir()
            else "is neither a run directory (no config.yaml and manifest.json) nor a comparison directory "
                 "(no compare.json and runs/)")
    raise PearlError(f"{directory} {what}; pearl-cl report needs the --out folder of pearl-cl run or of pearl-cl compare")


def _load_comparison(directory: Path) -> tuple[Comparison, dict]:
    """The comparison in ``directory`` (``compare.json``, checksum verified) and its settings.

    Raises:
        PearlError: ``compare.json`` missing from the manifest, corrupt, or holding no run.
    """
    raw = RunStore(directory).read_verified("compare.json")
    try:
        data = json.loads(raw)
        comparison = Comparison(directory, list(data["runs"]), list(data["methods"]))
        settings = {"benchmark": data["settings"]["benchmark"], "methods": list(data["settings"]["methods"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise PearlError(f"{directory / 'compare.json'} is not a comparison written by pearl-cl compare ({exc!r}); "
                         f"run pearl-cl compare again") from exc
    if not comparison.runs:
        raise PearlError(f"{directory} holds no finished run yet; wait for pearl-cl compare to finish its first run")
    return comparison, settings


def _comparison_points(comparison: Comparison, settings: dict) -> list[Point]:
    """One point per method of ``comparison``: means over seeds, with standard deviations."""
    from pearl_cl.commands.plots import Point

    runs = {spec.label: spec.method for spec in parse_methods(",".join(settings["methods"]))}
    def std(e: dict, column: str) -> float | None:
        return None if e["seeds"] == 1 else e[f"{column}_std"]
    return [Point(method_label(e["method"], _settings(e)), runs.get(e["method"], e["method"]), e["params_added_mean"],
                  e["task_il_accuracy_pct_mean"], e["routed_accuracy_pct_mean"], std(e, "task_il_accuracy_pct"),
                  std(e, "routed_accuracy_pct")) for e in comparison.methods]


def _run_point(directory: Path, result: RunResult) -> Point:
    """The run's point: its method (with its setting, e.g. a fixed rank), parameters added after
    the reference task, final average accuracies."""
    from pearl_cl.commands.plots import Point
    from pearl_cl.engine.restore import open_run

    m = result.metrics
    setting = METHODS.get(m["method"]).setting(open_run(directory).config) if m["method"] in METHODS else ""
    label = method_label(m["method"], [setting] if setting else []) + ("" if m["status"] == "complete" else " (incomplete)")
    return Point(label, m["method"], m["parameters_added_after_reference"]["count"],
                 m["scenarios"][SCENARIO]["average_accuracy"], m["scenarios"][_routed_scenario(result)]["average_accuracy"])


def _gather(directories: Sequence[Path]) -> _Sources:
    """Read every directory; the first gives the main run (for a comparison: the first seed's
    run of the first rank-choosing method listed, else its first run).

    Raises:
        PearlError: a directory that is not a run or comparison, a corrupt one, or one of
            another benchmark than the first.
    """
    main: tuple[RunResult, list[str]] | None = None
    comparison, points, benchmark = None, [], ""
    for directory in directories:
        if _kind(directory) == "comparison":
            found, settings = _load_comparison(directory)
            new, bench = _comparison_points(found, settings), settings["benchmark"]
            if main is None:
                first = found.runs[0]["seed"]
                choosers = set(budget_labels(parse_methods(",".join(settings["methods"]))))
                row = next((r for r in found.runs if r["seed"] == first and r["method"] in choosers), found.runs[0])
                name = Path(row["run_directory"]).name if row.get("run_directory") else f"{row['method']}-seed{row['seed']}"
                main, comparison = _inspected(directory / "runs" / name), found
        else:
            result, bad = _inspected(directory)
            new, bench = [_run_point(directory, result)], result.metrics["benchmark"]
            main = main or (result, bad)
        benchmark = benchmark or bench
        if bench != benchmark:
            raise PearlError(f"{directory} holds runs of {bench}, {directories[0]} of {benchmark}; the accuracy against "
                             f"parameters plot compares runs of one benchmark: give only directories of {benchmark}")
        taken = {p.label for p in points}
        points += [p if p.label not in taken else dataclasses.replace(p, label=f"{p.label} ({directory.name})") for p in new]
    return _Sources(main[0], main[1], points, comparison)


def _inspected(directory: Path) -> tuple[RunResult, list[str]]:
    """:func:`~pearl_cl.engine.operations.inspect` of the run in ``directory``, refused when the
    ``metrics.json`` the report reads fails its checksum (other failing files are listed in the report).

    Raises:
        PearlError: as ``inspect``, or a damaged ``metrics.json`` (names the fix).
    """
    result, bad = inspect(directory)
    if METRICS in bad:
        raise PearlError(f"{directory / METRICS} is corrupt, or its entry in {MANIFEST} is: a report would show damaged "
                         f"figures; pearl-cl run --resume {directory} rewrites it from progress.json")
    return result, bad


def _run_sections(result: RunResult, bad: list[str], images: dict[str, str]) -> list[tuple[str, str]]:
    """(heading, body) of the run's part of ``report.md``: headline metrics, accuracy matrices,
    tasks, ranks."""
    m, routed = result.metrics, _routed_scenario(result)
    metric_table, costs = headline_rows(result)
    check = (f"**{len(bad)} file(s) fail their checksum or are missing: {', '.join(bad)}** (pearl-cl inspect "
             f"{result.directory} lists them)\n\n" if bad else "")
    sections = [
        ("Headline metrics", f"{check}{title_line(result)} · status: {m['status']}\n\n{markdown_table(*metric_table)}\n\n"
                             f"{markdown_table(*costs)}"),
        ("Accuracy matrices", f"{images['accuracy']}\n\nR[i, j]: accuracy (%) on task j's test set after learning task i, "
                              f"with the task label (Task-IL, left) and without it through the router ({routed}, right); "
                              f"blank: task not learned yet."),
        ("Tasks", "Accuracies in % at the end of the run (task-il@learned: right after learning the task); "
                  "proximity: ‖ΔW‖_F / ‖W_ref‖_F of the task's probe over its layers.\n\n"
                  + markdown_table(*task_rows(result, proximity=True))),
    ]
    ranks = rank_rows(result)
    if ranks:
        sections.append(("Ranks per layer and task", f"{images['ranks']}\n\nRank per adaptable layer (rows, network "
                         f"order) and task (the first task trains the whole backbone and has none), with the probe's "
                         f"proximity; rank 0: the layer is not adapted for that task.\n\n{markdown_table(*ranks)}"))
    return sections


def _parameter_section(points: list[Point], routed: str, image: str) -> tuple[str, str]:
    """(heading, body) of the accuracy-against-parameters plot and its numbers."""
    rows = [[p.label, _plus_minus(p.params, None, 0), _plus_minus(p.task_il, p.task_il_std),
             _plus_minus(p.routed, p.routed_std)] for p in points]
    return ("Accuracy against parameters added",
            f"{image}\n\nFinal average accuracy (%, mean ± std over seeds where there are several) against the "
            f"parameters added after the first task (log scale); dashed: one method at several settings "
            f"(e.g. fixed ranks).\n\n"
            + markdown_table(["run or method", "params added", "Task-IL acc %", f"{routed} acc %"], rows))


def _markdown(sources: _Sources, images: dict[str, str], directories: Sequence[Path]) -> str:
    """The text of ``report.md``."""
    main, routed = sources.main, _routed_scenario(sources.main)
    parameters = _parameter_section(sources.points, routed, images["parameters"])
    m = main.metrics
    if sources.comparison is None:
        parts = [f"# Run report: `{main.directory.name}`"]
        parts += [f"## {heading}\n\n{body}" for heading, body in _run_sections(main, sources.bad, images) + [parameters]]
    else:
        c = sources.comparison
        parts = [f"# Comparison on {m['benchmark']}", compare_legend(c).replace("\n", " "), markdown_table(*compare_rows(c)),
                 f"## {parameters[0]}\n\n{parameters[1]}",
                 f"## The {m['method']} run of seed {m['seed']} (`runs/{main.directory.name}`)"]
        parts += [f"### {heading}\n\n{body}" for heading, body in _run_sections(main, sources.bad, images)]
    parts.append(f"Written by `pearl-cl report {' '.join(map(str, directories))}`; the plots are listed with their "
                 f"SHA-256 in {MANIFEST}.")
    return "\n\n".join(parts) + "\n"


def write_report(directories: Sequence[str | Path], out: str | Path | None = None) -> list[Path]:
    """Write the plots (:mod:`pearl_cl.commands.plots`, under ``plots/``) and ``report.md`` of a run or
    comparison, atomically and listed in the output directory's ``manifest.json``.

    ``directories[0]`` is the main run directory, or a comparison directory (made by
    :func:`pearl_cl.commands.compare.compare`; then the accuracy matrix and rank plots show the
    first seed's run of its first rank-choosing method, or its first run, and every method is a
    point, mean over seeds). Every further directory (run or comparison of the same benchmark) adds its points to
    the accuracy-against-parameters plot. Writes into ``out``, default ``directories[0]``.

    Returns the paths written: the PNGs, then ``report.md``.

    Raises:
        PearlError: no directory; a directory that is not a run or comparison directory, has no
            task learned, holds a corrupt ``config.yaml``, ``progress.json`` or ``compare.json``,
            or is of another benchmark than the first (the message names it and the fix); ``out``
            cannot be written, or another process is writing it (:mod:`pearl_cl.engine.lock`).
    """
    from pearl_cl.commands import plots

    if not directories:
        raise PearlError("give at least one run or comparison directory")
    paths = [Path(d) for d in directories]
    sources = _gather(paths)
    target = Path(out if out is not None else paths[0])
    RunStore(target)  # creates it, with a clear error when it cannot
    with writing(target):  # one writer: not while a run or resume writes the directory
        store = RunStore(target)
        accuracy = plots.accuracy_matrix_plot(store, sources.main)
        ranks = plots.rank_plot(store, sources.main)
        if ranks is None:
            store.delete(plots.RANKS_PNG)  # left by an earlier report into the same folder
        parameters = plots.accuracy_vs_parameters_plot(store, sources.points, _routed_scenario(sources.main))
        images = {"accuracy": f"![accuracy matrices]({plots.ACCURACY_PNG})",  # relative to report.md, beside plots/
                  "ranks": f"![rank and proximity per layer and task]({plots.RANKS_PNG})",
                  "parameters": f"![final accuracy against parameters added]({plots.PARAMETERS_PNG})"}
        written = [p for p in (accuracy, ranks, parameters) if p is not None]
        return written + [store.write_text(REPORT, _markdown(sources, images, paths))]
