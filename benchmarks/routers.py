"""Every router on PEARL models of several benchmarks and seeds: accuracy without task labels,
routing accuracy, the cost of the statistics, the bytes kept and the time to route.

For each benchmark and seed, PEARL learns the benchmark once (the config's settings plus the
benchmark's values below); then, in the same process, every router of
:data:`pearl_cl.registry.ROUTERS` labels every task's test set without task labels. One row per
(benchmark, seed, router); ``key=value`` overrides win over the benchmark's values:

* ``accuracy``: final average accuracy (%) in the benchmark's scenario (class- or domain-IL);
  ``task_il``: the same with task labels (%);
* ``routing``: % of test images sent to their own task;
* ``statistics_share``: seconds spent on the router statistics (every router's, one network
  pass of ``routing.sample`` images per task) as a share (%) of the seconds spent learning the
  tasks (probe, rank, training and statistics; evaluation excluded);
* ``bytes_per_task``: mean bytes this router keeps per task (its tensors and calibration row);
* ``ms_per_image_T5`` / ``T10`` / ``T20``: milliseconds to route one image (batches of 256
  test images, the branches' predictions included) choosing among T tasks; where fewer tasks
  were learned, the learned ones are repeated to make T (a timing, not an accuracy).

Rows go to ``routers.csv`` in ``out`` (default ``runs/routers``); the mean ± std over seeds is
printed per benchmark. Options (``key=value``): ``benchmarks`` (comma-separated names of
:data:`BENCHMARKS`), ``seeds=0,1,2``, ``out``, ``csv=A.csv,B.csv`` (summarise rows already
measured); any other ``key=value`` overrides the config of every run, e.g.

    .venv/bin/python benchmarks/routers.py benchmarks=split-mnist,split-fashion-mnist
    .venv/bin/python benchmarks/routers.py benchmarks=permuted-mnist,rotated-mnist backbone.name=mlp
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pearl_cl.config import load_config
from pearl_cl.engine.runner import benchmark_for
from pearl_cl.methods.pearl import Pearl
from pearl_cl.registry import ROUTERS
from pearl_cl.routers.base import get_router, route

BENCHMARKS = {  # name → config values (the benchmark's default config, capped where a full run exceeds 2 CPU cores' budget)
    "split-mnist": {"benchmark": "split-mnist"},
    "split-fashion-mnist": {"benchmark": "split-fashion-mnist"},
    "permuted-mnist": {"benchmark": "permuted-mnist", "data.train_per_task": 3000},
    "rotated-mnist": {"benchmark": "rotated-mnist", "data.train_per_task": 3000},
    "seq-mixed": {"benchmark": "seq-mixed", "data.train_per_task": 3000},
}
OPTIONS = ("benchmarks", "seeds", "out", "csv")
TASK_COUNTS = (5, 10, 20)
TIMED_IMAGES = 256
COLUMNS = ("accuracy", "task_il", "routing", "statistics_share", "bytes_per_task",
           *(f"ms_per_image_T{t}" for t in TASK_COUNTS))


def routing_ms(learner, x: torch.Tensor, router: str, tasks: int) -> float:
    """Milliseconds per image to route ``x`` ``(N, C, H, W)`` among ``tasks`` branches (the
    learned ones repeated in order), after one untimed call (which also leaves the
    ``likelihood-ratio`` router's pooled factor cached, as routing batch after batch would)."""
    records = [learner.records[i % len(learner.records)] for i in range(tasks)]
    args = (learner.model, x, [r.task for r in records], [r.classes for r in records],
            [learner.statistics[r.task] for r in records], get_router(router), learner.config.routing)
    route(*args, true_task=torch.zeros(len(x), dtype=torch.long))
    start = time.perf_counter()
    route(*args, true_task=torch.zeros(len(x), dtype=torch.long))
    return 1000.0 * (time.perf_counter() - start) / len(x)


def measure(name: str, seed: int, overrides: list[str]) -> list[dict]:
    """The rows of one benchmark and seed (one PEARL model, every router)."""
    config = load_config(None, [f"{k}={v}" for k, v in BENCHMARKS[name].items()] + overrides
                         + [f"seed={seed}", "routing.fit_all=true"])
    torch.manual_seed(config.seed)
    bench = benchmark_for(config)
    learner = Pearl(config, bench.image_shape)
    for i, task in enumerate(bench.tasks):
        learner.learn(task, config.seed * 1000 + i)
    seconds = [r.seconds for r in learner.records]
    share = 100.0 * sum(s["statistics"] for s in seconds) / sum(sum(s.values()) for s in seconds)
    sizes = [len(t.test_y) for t in bench.tasks]
    rows = []
    for router in ROUTERS:
        counts = learner.evaluate(bench.tasks, router)
        rows.append({"benchmark": name, "seed": seed, "router": router,
                     "accuracy": 100.0 * np.mean([c.routed_right / n for c, n in zip(counts, sizes)]),
                     "task_il": 100.0 * np.mean([c.task_il / n for c, n in zip(counts, sizes)]),
                     "routing": 100.0 * np.mean([c.routed_own / n for c, n in zip(counts, sizes)]),
                     "statistics_share": share,
                     "bytes_per_task": np.mean([learner.statistics[r.task].nbytes(router) for r in learner.records]),
                     **{f"ms_per_image_T{t}": routing_ms(learner, bench.tasks[0].test_x[:TIMED_IMAGES], router, t)
                        for t in TASK_COUNTS}})
        print(f"{name} seed {seed} {router}: " + ", ".join(f"{k} {rows[-1][k]:.4g}" for k in COLUMNS), flush=True)
    return rows


def summarise(rows: list[dict]) -> None:
    """Print mean ± std over seeds of every column, per benchmark and router."""
    for name in dict.fromkeys(r["benchmark"] for r in rows):
        seeds = sorted({int(r["seed"]) for r in rows if r["benchmark"] == name})
        print(f"\n{name} (seeds {', '.join(map(str, seeds))})")
        print(f"{'router':<17}" + "".join(f"{c:>20}" for c in COLUMNS))
        for router in dict.fromkeys(r["router"] for r in rows if r["benchmark"] == name):
            mine = [r for r in rows if r["benchmark"] == name and r["router"] == router]
            cells = [np.array([float(r[c]) for r in mine]) for c in COLUMNS]
            print(f"{router:<17}" + "".join(f"{v.mean():>12.4g} ± {v.std():<5.2g}" for v in cells))


def main(args: list[str]) -> None:
    options = dict(a.split("=", 1) for a in args if a.split("=", 1)[0] in OPTIONS)
    overrides = [a for a in args if a.split("=", 1)[0] not in OPTIONS]
    if any(a.startswith("benchmark=") for a in overrides):
        raise SystemExit("choose benchmarks with benchmarks=NAME[,NAME] (one of: " + ", ".join(BENCHMARKS) + ")")
    if "csv" in options:
        summarise([row for path in options["csv"].split(",") for row in csv.DictReader(open(path))])
        return
    names = options.get("benchmarks", ",".join(BENCHMARKS)).split(",")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmarks {unknown}; choose from {', '.join(BENCHMARKS)}")
    out = Path(options.get("out", "runs/routers"))
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        for seed in [int(s) for s in options.get("seeds", "0,1,2").split(",")]:
            rows += measure(name, seed, overrides)
            with open(out / "routers.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    summarise(rows)
    print(f"\nwrote {out / 'routers.csv'}")


if __name__ == "__main__":
    main(sys.argv[1:])
