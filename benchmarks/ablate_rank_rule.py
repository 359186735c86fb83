"""Ablation of the residual rule's tolerance ε (pearl.epsilon): accuracy against parameters added.

Runs PEARL on split-mnist once per ε, in one process, and prints one row per ε: final Task-IL
average accuracy (%), parameters added after the reference task (count and % of the backbone),
and seconds. Extra ``key=value`` arguments override the config of every run; ``epsilons=a,b,c``
replaces the grid and ``protocol=NAME`` starts from a named protocol, e.g.

    .venv/bin/python benchmarks/ablate_rank_rule.py data.train_per_task=3000 data.test_per_task=1000
    .venv/bin/python benchmarks/ablate_rank_rule.py protocol=classic-split-mnist epsilons=0.02,0.05,0.1,0.2

The default of ``pearl.epsilon`` in ``rank.py`` cites the table this printed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pearl_cl import load_config, run

EPSILONS = (0.05, 0.1, 0.2, 0.3)


def main(args: list[str]) -> None:
    options = dict(arg.split("=", 1) for arg in args if arg.startswith(("epsilons=", "protocol=")))
    overrides = [arg for arg in args if not arg.startswith(("epsilons=", "protocol="))]
    epsilons = [float(e) for e in options["epsilons"].split(",")] if "epsilons" in options else EPSILONS
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for eps in epsilons:
            config = load_config(None, overrides + [f"pearl.epsilon={eps}", f"out={Path(tmp) / str(eps)}"],
                                 protocol=options.get("protocol"))
            start = time.perf_counter()
            result = run(config)
            added = result.metrics["parameters_added_after_reference"]
            rows.append((eps, result.metrics["scenarios"]["task-il"]["average_accuracy"], added["count"],
                         added["percent_of_backbone"], time.perf_counter() - start))
    print(f"{'epsilon':>8}  {'Task-IL %':>9}  {'params added':>12}  {'% backbone':>10}  {'seconds':>7}")
    for eps, acc, count, pct, secs in rows:
        print(f"{eps:>8.2f}  {acc:>9.2f}  {count:>12,}  {pct:>10.2f}  {secs:>7.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
