"""Every router on one trained PEARL model: Class-/Domain-IL accuracy, routing accuracy, speed.

Learns the benchmark once with PEARL (the config's settings), then, in the same process, labels
every task's test set without task labels with each router of :data:`pearl_cl.registry.ROUTERS`
and prints one row per router: final average accuracy (%) in the benchmark's scenario, routing
(task-identification) accuracy (%), and inference throughput relative to Task-IL inference
(the task's own branch, label given) on the same images. ``key=value`` arguments override the
config, e.g.

    .venv/bin/python benchmarks/routers.py benchmark=split-fashion-mnist
    .venv/bin/python benchmarks/routers.py benchmark=permuted-mnist data.train_per_task=6000
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from pearl_cl import load_config
from pearl_cl.methods.pearl import Pearl
from pearl_cl.registry import ROUTERS
from pearl_cl.learning.evaluation import routed_counts
from pearl_cl.engine.runner import benchmark_for


def main(overrides: list[str]) -> None:
    config = load_config(None, overrides)
    torch.manual_seed(config.seed)
    bench = benchmark_for(config)
    learner = Pearl(config, bench.image_shape)
    for i, task in enumerate(bench.tasks):
        learner.learn(task, config.seed * 1000 + i)

    learner.count_correct(bench.tasks[0].name, bench.tasks[0].test_x, bench.tasks[0].test_y)  # warm-up, not timed
    start = time.perf_counter()
    task_il = [100.0 * learner.count_correct(t.name, t.test_x, t.test_y) / len(t.test_y) for t in bench.tasks]
    task_il_seconds = time.perf_counter() - start
    print(f"{config.benchmark} ({bench.spec.scenario}), {len(bench.tasks)} tasks; Task-IL average {np.mean(task_il):.2f}%")
    print(f"{'router':<12} {'accuracy %':>10} {'routing %':>9} {'throughput vs Task-IL':>22}")
    for router in ROUTERS:
        right, routed = [], []
        start = time.perf_counter()
        for j, task in enumerate(bench.tasks):
            r, c = routed_counts(learner, task, j, router)
            right.append(100.0 * r / len(task.test_y))
            routed.append(100.0 * c / len(task.test_y))
        seconds = time.perf_counter() - start
        print(f"{router:<12} {np.mean(right):>10.2f} {np.mean(routed):>9.2f} {task_il_seconds / seconds:>21.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
