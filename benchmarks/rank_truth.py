"""Ground truth for PEARL's claim: does a proximity measure track the rank a task needs?

On ``graded-mnist`` (a 5-class reference task, then twelve 5-class tasks of constructed
distance, :mod:`pearl_cl.data.graded`) the reference task is trained once per backbone and seed;
then, for every later task, each from the same W_ref and with the same schedule
(``train.epochs``):

* full fine-tuning (every backbone weight, BatchNorm and a new head; ``train.lr``);
* fixed-rank LoRA at every rank of ``ranks`` (standard zero init, every adaptable layer at
  ``min(r, its shape)``, the task's own BatchNorm and head; ``train.adapter_lr``); rank 0 is
  BatchNorm and head only;
* the task's *needed rank*: the smallest of those ranks whose Task-IL test accuracy is within
  ``tolerance`` (1) point of full fine-tuning (the largest rank when none is); and its
  *saturating rank*: the smallest within ``tolerance`` of the best accuracy of all those runs
  (full fine-tuning included) — the same unless full fine-tuning falls behind LoRA, as it can
  on a short schedule with Adam on every weight;
* every registered proximity measure (:data:`pearl_cl.registry.PROXIMITIES`) and the seconds
  it took;
* the total rank PEARL's ``budget`` rule chooses for the task with the config's
  ``pearl.proximity``, ``pearl.saturation`` and ``pearl.r_max`` (the measure minus its value
  on the reference task itself, :func:`~pearl_cl.core.rank.task_budget`).

It prints one table per backbone and seed, then Spearman's ρ of every measure, and of the
chosen total rank, against the needed rank and against the constructed distance, per backbone
and seed, with each measure's mean seconds. Options (``key=value``): ``backbones=mlp,resnet18``, ``seeds=0,1``,
``ranks=0,1,2,4,8,16,32``, ``tolerance=1``, ``json=PATH`` (also write every number), and any
config key (``train.epochs=3``)::

    .venv/bin/python benchmarks/rank_truth.py backbones=mlp seeds=0,1
"""

from __future__ import annotations

import copy
import json
import sys
import time

import numpy as np
import torch

from pearl_cl.config import load_config
from pearl_cl.core.adapters import add_task_adapter, reference_copy, task_parameters
from pearl_cl.core.rank import task_budget
from pearl_cl.data.graded import VIEWS
from pearl_cl.engine.runner import benchmark_for
from pearl_cl.learning.training import count_correct, fit
from pearl_cl.methods.pearl import Pearl
from pearl_cl.registry import PROXIMITIES

DEFAULTS = {"benchmark": "graded-mnist", "data.train_per_task": 1500, "data.test_per_task": 500, "train.epochs": 5,
            "train.reference_epochs": 5}
OPTIONS = ("backbones", "seeds", "ranks", "tolerance", "json")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (ties get their average rank; NaN when
    either is constant). Written here, not taken from SciPy, to keep SciPy out of the
    dependencies for one statistic."""
    def ranks(values: list[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = values.argsort(kind="stable")
        out = np.empty(len(values))
        out[order] = np.arange(len(values), dtype=float)
        for v in np.unique(values):
            out[values == v] = out[values == v].mean()
        return out
    x, y = ranks(a), ranks(b)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _accuracy(model, name: str, task) -> float:
    return 100.0 * count_correct(model, lambda xb: model(xb, name), task.test_x, task.test_y) / len(task.test_y)


def _full(reference_model, task, config, seed: int) -> float:
    """Task-IL accuracy of fine-tuning every weight from W_ref, with a new head."""
    torch.manual_seed(seed)
    backbone = reference_copy(reference_model).requires_grad_(True)
    head = torch.nn.Linear(backbone.feature_dim, len(task.classes))
    net = torch.nn.Sequential(backbone, head)
    fit(net, net, net.parameters(), task.train_x, task.train_y, config.fit_settings("train.epochs", "train.lr"), seed,
        desc=f"{task.name} full")
    net.eval()
    correct = count_correct(net, net, task.test_x, task.test_y)
    return 100.0 * correct / len(task.test_y)


def _lora(reference_model, task, rank: int, config, seed: int) -> float:
    """Task-IL accuracy of fixed-rank LoRA (zero init) from W_ref, with its own BatchNorm and head."""
    torch.manual_seed(seed)
    model = copy.deepcopy(reference_model)
    add_task_adapter(model, task.name, {name: rank for name in model.layer_names}, "zero")
    model.add_head(task.name, len(task.classes))
    params = task_parameters(model, task.name)
    fit(model, lambda xb: model(xb, task.name), params.values(), task.train_x, task.train_y,
        config.fit_settings("train.epochs", "train.adapter_lr"), seed, desc=f"{task.name} lora-r{rank}")
    return _accuracy(model, task.name, task)


def measure(backbone: str, seed: int, ranks: list[int], tolerance: float, overrides: list[str]) -> list[dict]:
    """One row per later task of graded-mnist for ``backbone`` and ``seed``."""
    config = load_config(None, [f"{k}={v}" for k, v in DEFAULTS.items()] + [f"backbone.name={backbone}", f"seed={seed}",
                                                                          "pearl.rank_rule=budget"] + overrides)
    torch.manual_seed(seed)
    bench = benchmark_for(config)
    learner = Pearl(config, bench.image_shape)
    learner.learn(bench.tasks[0], seed * 1000)
    reference_model = learner.model
    reference = reference_copy(reference_model)
    probe_settings = config.fit_settings("pearl.probe_epochs", "train.lr", iterations=False)
    baseline = learner.baseline if learner.rule.name == "budget" else 0.0
    layers = len(reference_model.layer_names)
    rows = []
    for task in bench.tasks[1:]:
        seed_t = seed * 1000 + task.index
        full = _full(reference_model, task, config, seed_t)
        accuracy = {r: _lora(reference_model, task, r, config, seed_t) for r in ranks}
        needed = next((r for r in ranks if accuracy[r] >= full - tolerance), ranks[-1])
        best = max(full, *accuracy.values())
        saturating = next(r for r in ranks if accuracy[r] >= best - tolerance or r == ranks[-1])
        proximities, seconds = {}, {}
        for name, measure_fn in PROXIMITIES.items():
            start = time.perf_counter()
            proximities[name] = measure_fn(reference, task, probe_settings, seed_t).task
            seconds[name] = time.perf_counter() - start
        chosen = task_budget(max(0.0, proximities[config.pearl.proximity] - baseline), layers, config.pearl.r_max,
                             config.pearl.saturation)
        rows.append({"backbone": backbone, "seed": seed, "task": task.name, "view": VIEWS[task.index][0],
                     "distance": bench.spec.task_distances[task.index], "full": full,
                     "accuracy": {str(r): a for r, a in accuracy.items()}, "needed_rank": needed,
                     "saturating_rank": saturating, "proximity": proximities, "seconds": seconds, "chosen_total_rank": chosen, "layers": layers})
        print(_row(rows[-1], ranks), flush=True)
    return rows


def _row(row: dict, ranks: list[int]) -> str:
    accs = " ".join(f"{row['accuracy'][str(r)]:6.2f}" for r in ranks)
    prox = " ".join(f"{row['proximity'][m]:9.4f}" for m in row["proximity"])
    return (f"{row['backbone']:<9} {row['seed']:>4} {row['task']:<6} {row['view']:<11} {row['distance']:>4} "
            f"{row['full']:6.2f}  {accs}  {row['needed_rank']:>6} {row['saturating_rank']:>6}  {prox}  {row['chosen_total_rank']:>6}")


def main(args: list[str]) -> None:
    options = dict(arg.split("=", 1) for arg in args if arg.split("=", 1)[0] in OPTIONS)
    overrides = [arg for arg in args if arg.split("=", 1)[0] not in OPTIONS]
    backbones = options.get("backbones", "mlp,resnet18").split(",")
    seeds = [int(s) for s in options.get("seeds", "0,1").split(",")]
    ranks = [int(r) for r in options.get("ranks", "0,1,2,4,8,16,32").split(",")]
    tolerance = float(options.get("tolerance", 1.0))
    names = PROXIMITIES.names()
    print(f"{'backbone':<9} {'seed':>4} {'task':<6} {'view':<11} {'dist':>4} {'full':>6}  "
          + " ".join(f"{'r=' + str(r):>6}" for r in ranks) + f"  {'needed':>6} {'satur.':>6}  "
          + " ".join(f"{n:>9}" for n in names) + f"  {'chosen':>6}")
    rows = [row for backbone in backbones for seed in seeds for row in measure(backbone, seed, ranks, tolerance, overrides)]
    print(f"\nSpearman's rho (needed rank: smallest r within {tolerance:g} point of full fine-tuning)")
    print(f"{'measure':<14} {'backbone':<9} {'seed':>4} {'vs needed':>9} {'vs satur.':>9} {'vs dist':>8} {'seconds':>8}")
    for name in names:
        for backbone in backbones:
            for seed in seeds:
                group = [r for r in rows if r["backbone"] == backbone and r["seed"] == seed]
                values = [r["proximity"][name] for r in group]
                print(f"{name:<14} {backbone:<9} {seed:>4} {spearman(values, [r['needed_rank'] for r in group]):>9.2f} "
                      f"{spearman(values, [r['saturating_rank'] for r in group]):>9.2f} "
                      f"{spearman(values, [r['distance'] for r in group]):>8.2f} "
                      f"{np.mean([r['seconds'][name] for r in group]):>8.2f}")
    for backbone in backbones:
        for seed in seeds:
            group = [r for r in rows if r["backbone"] == backbone and r["seed"] == seed]
            needed, distance = [r["needed_rank"] for r in group], [r["distance"] for r in group]
            chosen = [r["chosen_total_rank"] for r in group]
            print(f"{backbone} seed {seed}: needed rank vs distance rho {spearman(needed, distance):.2f}; budget rule's "
                  f"total rank ({min(chosen)}..{max(chosen)} over {group[0]['layers']} layers) vs needed rank rho "
                  f"{spearman(chosen, needed):.2f}, vs saturating rank "
                  f"{spearman(chosen, [r['saturating_rank'] for r in group]):.2f}, vs distance {spearman(chosen, distance):.2f}")
    if "json" in options:
        with open(options["json"], "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
