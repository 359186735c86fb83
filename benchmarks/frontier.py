"""PEARL against the fixed-rank frontier: final Task-IL accuracy against parameters added.

For each benchmark and seed the reference task is learned once; then every configuration learns
the later tasks from that same reference, in order, as a run would (PEARL's branches are
frozen once learned, so each task's Task-IL accuracy at the end equals its accuracy when
learned, and runs differ only after the reference). Configurations:

* PEARL with the ``budget`` rule at each ``saturation`` of ``saturations`` (a smaller
  saturation gives every task a larger budget; ``none``: no budget point), with ``pearl.init``
  = each of ``pearl_inits``; and PEARL with the ``residual`` rule (its ``pearl.epsilon``, SVD init);
* fixed-rank LoRA at every rank of ``ranks``, with SVD and with zero initialisation (so that
  the rank choice is separated from the initialisation).

It prints, per benchmark, the mean ± std over seeds of the average Task-IL accuracy of the later
tasks (%) and of the parameters they added (LoRA factors, BatchNorm, heads), then for each PEARL
point the fixed-rank curve of the same initialisation read at PEARL's parameter count
(log-linear interpolation) and the gap; it writes ``frontier.csv`` and one PNG per benchmark
(fixed-rank curves as lines, PEARL's points as stars) into ``out`` (default ``runs/frontier``). Options (``key=value``): ``benchmarks``,
``seeds=0,1,2``, ``saturations``, ``ranks=1,2,4,8,16``, ``pearl_inits=zero``, ``out``,
``csv=A.csv,B.csv`` (summarise and plot rows already measured, e.g. several runs joined); any
other ``key=value`` is a config override of every run (``pearl.*`` keys change PEARL's points
only: fixed-rank LoRA reads none but ``pearl.init``)::

    .venv/bin/python benchmarks/frontier.py backbone.name=mlp
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pearl_cl.config import load_config, updated
from pearl_cl.engine.runner import benchmark_for
from pearl_cl.engine.store import RunStore
from pearl_cl.registry import METHODS

BENCHMARKS = {  # name → config values: the graded sequence, and a heterogeneous one with 5-class tasks
    "graded-mnist": {"benchmark": "graded-mnist"},
    "seq-mixed-5": {"benchmark": "seq-mixed", "data.classes_per_task": 5},
}
DEFAULTS = {"backbone.name": "mlp", "data.train_per_task": 1500, "data.test_per_task": 1000, "train.epochs": 5,
            "train.reference_epochs": 5}
OPTIONS = ("benchmarks", "seeds", "saturations", "ranks", "pearl_inits", "out", "csv")


def configurations(saturations: list[float], ranks: list[int], pearl_inits: list[str]) -> list[tuple[str, str, dict]]:
    """``(label, method, config values)`` of every point: PEARL's budget rule at each saturation
    and init, PEARL's ``residual`` rule (ε from the config, SVD init from the finetune probe),
    and fixed-rank LoRA at each rank and init."""
    points = [(f"pearl s={s:g} {init}", "pearl", {"pearl.rank_rule": "budget", "pearl.saturation": s, "pearl.init": init})
              for init in pearl_inits for s in saturations]
    points.append(("pearl-residual svd", "pearl", {"pearl.rank_rule": "residual", "pearl.init": "svd"}))
    points += [(f"lora r={r} {init}", "lora", {"lora.rank": r, "pearl.init": init}) for init in ("svd", "zero") for r in ranks]
    return points


def later_tasks(reference_learner, bench, method: str, values: dict, seed: int) -> tuple[float, int]:
    """Average Task-IL accuracy (%) of the later tasks and the parameters they added, for
    ``method`` with ``values`` learning them after the reference learner's task."""
    config = updated(reference_learner.config, {**values, "method": method})
    learner = METHODS.get(method)(config, bench.image_shape, bench.n_classes)
    first = reference_learner.records[0]
    learner.restore(bench.tasks[0], reference_learner.task_tensors(first.task), first)
    accuracies, params = [], 0
    for task in bench.tasks[1:]:
        record = learner.learn(task, seed * 1000 + task.index)
        params += record.parameters["total"]
        accuracies.append(100.0 * learner.count_correct(task.name, task.test_x, task.test_y) / len(task.test_y))
    return float(np.mean(accuracies)), params


def interpolate(params: float, curve: list[tuple[float, float]]) -> float:
    """The accuracy of ``curve`` (``(params, accuracy)`` points) at ``params``, linear in
    log(params); NaN outside the curve's range."""
    curve = sorted(curve)
    xs, ys = np.log([p for p, _ in curve]), [a for _, a in curve]
    x = np.log(params)
    return float(np.interp(x, xs, ys)) if xs[0] <= x <= xs[-1] else float("nan")


def measure(names: list[str], seeds: list[int], points: list[tuple[str, str, dict]], overrides: list[str]) -> list[dict]:
    """One row per benchmark, seed and point: ``accuracy`` (%) and ``params``."""
    rows = []
    for name in names:
        for seed in seeds:
            values = {**DEFAULTS, **BENCHMARKS[name], "seed": seed}
            config = load_config(None, [f"{k}={v}" for k, v in values.items()] + overrides)
            torch.manual_seed(seed)
            bench = benchmark_for(config)
            reference = METHODS.get("pearl")(config, bench.image_shape, bench.n_classes)
            reference.learn(bench.tasks[0], seed * 1000)
            for label, method, point_values in points:
                accuracy, params = later_tasks(reference, bench, method, point_values, seed)
                rows.append({"benchmark": name, "seed": seed, "point": label, "accuracy": accuracy, "params": params})
                print(f"{name} seed {seed} {label:<18} Task-IL {accuracy:6.2f}%  params {params:>9,}", flush=True)
    return rows


def plot(store: RunStore, name: str, summary: dict[str, tuple[float, float, float]]) -> Path:
    """``<name>.png``: mean Task-IL accuracy (± std) against parameters added (log scale); each
    fixed-rank initialisation a line, PEARL's points as stars (filled: SVD init)."""
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    for init, colour in (("svd", "tab:blue"), ("zero", "tab:gray")):
        line = sorted((s[2], s[0], s[1], lab) for lab, s in summary.items() if lab.startswith("lora") and lab.endswith(init))
        ax.errorbar([p for p, *_ in line], [a for _, a, *_ in line], yerr=[e for _, _, e, _ in line], fmt="o--",
                    color=colour, capsize=3, label=f"fixed-rank LoRA, {init} init (r = {', '.join(l.split()[1][2:] for *_, l in line)})")
    pearl = [(lab, s) for lab, s in summary.items() if lab.startswith("pearl")]
    colours = matplotlib.colormaps["tab10"].colors
    for k, (lab, (accuracy, std, params)) in enumerate(pearl):
        ax.errorbar(params, accuracy, yerr=std, fmt="*", markersize=15, capsize=3, color=colours[(k + 2) % 10],
                    markerfacecolor=colours[(k + 2) % 10] if lab.endswith("svd") else "white", label=lab)
    ax.set_xscale("log")
    ax.set_xlabel("parameters added after the reference task (log scale; mean over seeds)")
    ax.set_ylabel("average Task-IL accuracy of the later tasks (%)")
    ax.set_title(f"{name}: PEARL against fixed-rank LoRA", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return store.write_bytes(f"{name}.png", buffer.getvalue())


def summarise(rows: list[dict], out: Path) -> None:
    """Print each benchmark's mean ± std per point and the gap of every PEARL point to the
    fixed-rank curve of its initialisation; write one PNG per benchmark into ``out``. A point's
    method and initialisation are the first and last words of its label."""
    store = RunStore(out)
    for name in dict.fromkeys(r["benchmark"] for r in rows):
        group = [r for r in rows if r["benchmark"] == name]
        seeds = sorted({int(r["seed"]) for r in group})
        print(f"\n{name}: mean ± std over seeds {', '.join(map(str, seeds))} (later tasks' average Task-IL %, parameters added)")
        summary = {}
        for label in dict.fromkeys(r["point"] for r in group):
            acc = [float(r["accuracy"]) for r in group if r["point"] == label]
            par = [float(r["params"]) for r in group if r["point"] == label]
            summary[label] = (float(np.mean(acc)), float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0, float(np.mean(par)))
            print(f"  {label:<26} {summary[label][0]:6.2f} ± {summary[label][1]:4.2f}   {summary[label][2]:>11,.0f}")
        for label, (accuracy, _, params) in summary.items():
            if not label.split()[0].startswith("pearl"):
                continue
            init = label.split()[-1]
            curve = [(s[2], s[0]) for lab, s in summary.items() if lab.split()[0] == "lora" and lab.split()[-1] == init]
            read = interpolate(params, curve) if len(curve) > 1 else float("nan")
            print(f"  {label}: fixed-rank ({init} init) at its parameters {read:6.2f}%, gap {accuracy - read:+.2f} points")
        print(f"  plot: {plot(store, name, summary)}")


def main(args: list[str]) -> None:
    options = dict(arg.split("=", 1) for arg in args if arg.split("=", 1)[0] in OPTIONS)
    overrides = [arg for arg in args if arg.split("=", 1)[0] not in OPTIONS]
    out = Path(options.get("out", "runs/frontier"))
    if "csv" in options:  # summarise rows already measured (several CSV files may be joined with commas)
        rows = [row for path in options["csv"].split(",") for row in csv.DictReader(open(path))]
        summarise(rows, out)
        return
    names = options.get("benchmarks", ",".join(BENCHMARKS)).split(",")
    seeds = [int(s) for s in options.get("seeds", "0,1,2").split(",")]
    saturations = options.get("saturations", "1,0.5,0.25")
    points = configurations([float(s) for s in saturations.split(",")] if saturations != "none" else [],
                            [int(r) for r in options.get("ranks", "1,2,4,8,16").split(",")],
                            options.get("pearl_inits", "zero").split(","))
    rows = measure(names, seeds, points, overrides)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "frontier.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summarise(rows, out)
    print(f"\nwrote {out / 'frontier.csv'}")


if __name__ == "__main__":
    main(sys.argv[1:])
