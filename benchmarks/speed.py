"""What PEARL costs, side by side: speed and memory as ratios measured in one process.

For each backbone (``backbones=resnet18,mlp``) on split-mnist with the default config
(``key=value`` arguments override it, e.g. ``train.batch_size=128``), prints:

1. training throughput (images/s) of a task's adapter phase (task 2's adapter, ranks from the
   finetune probe) against full fine-tuning of the same backbone (a copy of W_ref with a fresh
   head), same batch size and data;
2. the cost of choosing ranks — each probe (finetune, gradient) with the residual rule, and the
   budget rule with each proximity measure (linear-probe, gradient; zero init, no probe) — and
   of the rank step, as a share of the task's time (the wall time of ``Pearl.learn`` on task 2,
   router statistics included);
3. Task-IL inference with the adapter unmerged, merged, and the bare backbone;
4. class-/domain-IL inference per router against Task-IL inference for T = 5, 10, 20 tasks
   (``permuted-mnist`` cut into 20 tasks of 256 training images, 230 after the validation split:
   only the number of branches matters here, not their accuracy);
5. peak memory (RSS), and parameters and bytes per task against a full copy per task;
6. end-to-end wall time of ``pearl-cl run`` with PEARL (gradient probe) against Fine-tune;
7. achieved training FLOP/s against the FLOP/s of a large ``torch.matmul`` (the ceiling).

Things compared in sections 1, 3, 4 and 7 are timed interleaved (A B A B …) and the median of the
repeats is kept, so the noise of this machine hits both alike; sections 5 and 6 are one run of
each method, one after the other. The ratios are the result, not the absolute figures.
``sections=1,3`` runs a subset (5 and 6 share their runs); ``protocol=classic-split-mnist`` starts
from a named protocol (the MLP's literature protocol: width 1, batch 128, 2,000 steps per task).

    .venv/bin/python benchmarks/speed.py
    .venv/bin/python benchmarks/speed.py backbones=mlp sections=1,2,3
    .venv/bin/python benchmarks/speed.py backbones=mlp protocol=classic-split-mnist
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pearl_cl import load_config
from pearl_cl.core.adapters import merged_copy, reference_copy, task_parameters
from pearl_cl.config import RunConfig, updated
from pearl_cl.data.benchmarks import split_tasks
from pearl_cl.data.sources import DATASETS
from pearl_cl.methods.pearl import Pearl
from pearl_cl.commands.report import text_table
from pearl_cl.registry import BENCHMARKS, ROUTERS
from pearl_cl.learning.evaluation import local_labels, routed_counts
from pearl_cl.engine.runner import benchmark_for
from pearl_cl.learning.training import count_correct, fit

REPEATS = 5
TARGET_SECONDS = 2.0  # length of one timed training call
MIN_STEPS = 20  # however slow the first steps were
ROUTER_TASKS = (5, 10, 20)


def interleaved(calls: dict[str, Callable[[], object]], repeats: int = REPEATS) -> dict[str, float]:
    """Median wall seconds of each call, the calls run in turn ``repeats`` times after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def show(header: list[str], rows: list[list[str]]) -> None:
    print(text_table(header, rows))


VARIANTS = {  # section 2: how PEARL chooses ranks → the config values that say so
    "finetune probe, residual": {"pearl.probe": "finetune"},
    "gradient probe, residual": {"pearl.probe": "gradient"},
    "budget, linear-probe, zero init": {"pearl.rank_rule": "budget", "pearl.proximity": "linear-probe", "pearl.init": "zero"},
    "budget, gradient, zero init": {"pearl.rank_rule": "budget", "pearl.proximity": "gradient", "pearl.init": "zero"},
}


def learn_two(config: RunConfig) -> tuple[object, dict[str, Pearl], dict[str, float]]:
    """The benchmark, a learner per :data:`VARIANTS` entry after tasks 1 and 2 (the reference task
    learned once and restored into each), and each one's task-2 wall seconds."""
    torch.manual_seed(config.seed)
    bench = benchmark_for(config)
    base = Pearl(config, bench.image_shape)
    base.learn(bench.tasks[0], config.seed * 1000)
    reference = base.records[0]
    learners, seconds = {}, {}
    for name, values in VARIANTS.items():
        learner = Pearl(updated(config, values), bench.image_shape)
        learner.restore(bench.tasks[0], base.task_tensors(reference.task), reference)
        start = time.perf_counter()
        learner.learn(bench.tasks[1], config.seed * 1000 + 1)
        learners[name], seconds[name] = learner, time.perf_counter() - start
    return bench, learners, seconds


def probe_shares(learners: dict[str, Pearl], seconds: dict[str, float]) -> None:
    print("2. task 2's time by step (share of Pearl.learn's wall time): probe = copying W_ref, probe and proximity "
          "measure, rank rule, SVD; rank step = building the adapter and head")
    rows = []
    for variant, learner in learners.items():
        s, total = learner.records[-1].seconds, seconds[variant]
        rest = total - s["probe"] - s["rank"] - s["train"]
        ranks = learner.records[-1].ranks.values()
        rows.append([variant, f"{total:.2f}", *(f"{100 * v / total:.1f}%" for v in (s["probe"], s["rank"], s["train"], rest)),
                     f"{100 * (s['probe'] + s['rank']) / total:.1f}%", str(sum(r.rank for r in ranks)),
                     f"{learner.records[-1].parameters['adapter']:,}"])
    show(["variant", "task s", "probe", "rank step", "adapter training", "statistics+val", "probe+rank", "rank sum",
          "LoRA params"], rows)


def training_calls(learner: Pearl, task, config: RunConfig) -> tuple[dict[str, Callable[[], object]], dict[str, tuple], int]:
    """A timed adapter-phase fit and a full fine-tuning fit of ``steps`` steps each, and what one step of each runs."""
    model = learner.model
    adapter_params = list(task_parameters(model, task.name).values())
    full = nn.Sequential(reference_copy(model), nn.Linear(model.feature_dim, len(task.classes))).requires_grad_(True)
    arms = {"adapter phase": (model, lambda xb: model(xb, task.name), adapter_params, "train.adapter_lr"),
            "full fine-tune": (full, full, list(full.parameters()), "train.lr")}

    def call(arm: str, steps: int) -> Callable[[], object]:
        module, forward, params, lr_key = arms[arm]
        settings = dataclasses.replace(config.fit_settings("train.epochs", lr_key), iterations=steps)
        return lambda: fit(module, forward, params, task.train_x, task.train_y, settings, 0, desc=arm)

    probe_steps = 5
    per_step = max(interleaved({a: call(a, probe_steps) for a in arms}, 1).values()) / probe_steps
    steps = max(MIN_STEPS, round(TARGET_SECONDS / per_step))
    return {a: call(a, steps) for a in arms}, arms, steps


def step_flops(module: nn.Module, forward, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward and backward pass (no optimiser step), by PyTorch's FlopCounterMode."""
    module.train()
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(forward(x), y).backward()
    for p in params:
        p.grad = None
    return counter.get_total_flops()


def matmul_flops_per_second(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / interleaved({"matmul": lambda: torch.matmul(a, b)})["matmul"]


def throughput_and_flops(learner: Pearl, task, config: RunConfig, sections: set[int]) -> None:
    calls, arms, steps = training_calls(learner, task, config)
    seconds = interleaved(calls)
    batch = config.train.batch_size
    rate = {a: steps * batch / s for a, s in seconds.items()}
    if 1 in sections:
        print(f"1. training throughput, batch {batch}, {steps} steps per call, median of {REPEATS}")
        show(["phase", "images/s", "vs full fine-tune"],
              [[a, f"{r:,.0f}", f"{r / rate['full fine-tune']:.2f}x"] for a, r in rate.items()])
    if 7 in sections:
        ceiling = matmul_flops_per_second()
        x, y = task.train_x[:batch], task.train_y[:batch]
        print(f"7. achieved training FLOP/s (forward+backward FLOPs counted by FlopCounterMode; the optimiser step is"
              f" not counted) against torch.matmul 2048x2048: {ceiling / 1e9:.1f} GFLOP/s")
        rows = []
        for arm, (module, forward, params, _) in arms.items():
            achieved = step_flops(module, forward, params, x, y) * steps / seconds[arm]
            rows.append([arm, f"{achieved / 1e9:.2f}", f"{100 * achieved / ceiling:.1f}%"])
        show(["phase", "GFLOP/s", "of matmul"], rows)


def inference(learner: Pearl, task) -> None:
    model, name = learner.model, task.name
    merged = merged_copy(model, name)
    bare = nn.Sequential(reference_copy(model), model.heads[name])
    x, y = task.test_x, task.test_y
    nets = {"unmerged adapter": (model, lambda xb: model(xb, name)), "merged adapter": (merged, merged), "bare backbone": (bare, bare)}
    counts = {k: count_correct(m, f, x, y) for k, (m, f) in nets.items()}
    seconds = interleaved({k: (lambda m=m, f=f: count_correct(m, f, x, y)) for k, (m, f) in nets.items()})
    print(f"3. Task-IL inference on task 2's {len(y)} test images (correct: unmerged {counts['unmerged adapter']}, "
          f"merged {counts['merged adapter']})")
    show(["branch", "images/s", "vs bare backbone"],
          [[k, f"{len(y) / s:,.0f}", f"{seconds['bare backbone'] / s:.2f}x"] for k, s in seconds.items()])


def routers_against_tasks(config: RunConfig) -> None:
    spec = dataclasses.replace(BENCHMARKS["permuted-mnist"], n_tasks=max(ROUTER_TASKS))
    images = DATASETS[spec.dataset](data_root=config.data.root, download=False)
    tasks = split_tasks(images, spec, config.seed, train_per_task=256, test_per_task=128)
    torch.manual_seed(config.seed)
    learner = Pearl(updated(config, {"pearl.probe": "gradient", "routing.fit_all": True}), images.image_shape)
    timed = tasks[:5]  # the same 640 images at every T
    rows = {r: [] for r in ("Task-IL images/s", *ROUTERS)}
    for i, task in enumerate(tasks):
        learner.learn(task, i)
        if i + 1 not in ROUTER_TASKS:
            continue
        calls = {"task-il": lambda: [learner.count_correct(t.name, t.test_x, t.test_y) for t in timed]}
        local = local_labels(tasks)
        calls.update({r: (lambda r=r: [routed_counts(learner, t, j, local, r) for j, t in enumerate(timed)]) for r in ROUTERS})
        seconds = interleaved(calls, 3)
        rows["Task-IL images/s"].append(f"{sum(len(t.test_y) for t in timed) / seconds['task-il']:,.0f}")
        for r in ROUTERS:
            rows[r].append(f"{seconds['task-il'] / seconds[r]:.2f}x")
    print("4. inference without task labels: throughput per router against Task-IL (label given), on 640 images")
    show(["router", *(f"T={t}" for t in ROUTER_TASKS)], [[k, *v] for k, v in rows.items()])


def run_cli(config_args: list[str], out: Path) -> float:
    """Wall seconds of one ``pearl-cl run`` subprocess writing ``out``."""
    command = [str(Path(sys.executable).with_name("pearl-cl")), "run", "--out", str(out), *config_args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def tensor_bytes(path: Path, prefixes: tuple[str, ...]) -> int:
    return sum(t.numel() * t.element_size() for k, t in load_file(path).items() if k.startswith(prefixes))


def end_to_end(backbone: str, overrides: list[str], sections: set[int], protocol: str | None) -> None:
    sets = [a for o in [f"backbone.name={backbone}", *overrides] for a in ("--set", o)]
    sets += ["--protocol", protocol] if protocol else []
    with tempfile.TemporaryDirectory() as tmp:
        pearl_dir, finetune_dir = Path(tmp, "pearl"), Path(tmp, "finetune")
        pearl_s = run_cli([*sets, "--set", "pearl.probe=gradient"], pearl_dir)
        finetune_s = run_cli(["--method", "finetune", *sets], finetune_dir)
        pearl, finetune = (json.loads(Path(d, "metrics.json").read_text()) for d in (pearl_dir, finetune_dir))
        if 6 in sections:
            print("6. end-to-end `pearl-cl run` (one subprocess each, Python start-up and data loading included)")
            show(["method", "wall s", "vs Fine-tune", "learn+evaluate s"],
                  [[m, f"{s:.1f}", f"{s / finetune_s:.2f}x", f"{sum(t['total'] for t in r['seconds_per_task']):.1f}"]
                   for m, s, r in (("pearl (gradient probe)", pearl_s, pearl), ("finetune", finetune_s, finetune))])
        if 5 in sections:
            files = sorted(Path(pearl_dir, "tasks").glob("task*.safetensors"), key=lambda p: int(p.stem[4:]))
            full_bytes = tensor_bytes(files[0], ("backbone.", "head."))
            full_params = pearl["backbone_parameters"] + pearl["parameters_added_per_task"][0]["head"]
            print(f"5. memory: peak RSS pearl {pearl['peak_memory_bytes'] / 2**20:,.0f} MiB, finetune "
                  f"{finetune['peak_memory_bytes'] / 2**20:,.0f} MiB; a full copy per task (backbone incl. BatchNorm "
                  f"statistics + head) is {full_params:,} parameters, {full_bytes / 2**10:,.1f} KiB")
            rows = []
            for path, task in zip(files[1:], pearl["parameters_added_per_task"][1:]):
                own = tensor_bytes(path, ("adapter.", "head."))
                rows.append([task["task"], f"{task['total']:,}", f"{task['total'] / full_params:.3f}x", f"{own / 2**10:,.1f}",
                             f"{own / full_bytes:.3f}x", f"{tensor_bytes(path, ('router.',)) / 2**10:,.1f}"])
            show(["task", "parameters", "vs full copy", "adapter+head KiB", "vs full copy", "router statistics KiB"], rows)


def main(args: list[str]) -> None:
    own = ("backbones=", "sections=", "protocol=")
    options = dict(a.split("=", 1) for a in args if a.startswith(own))
    overrides = [a for a in args if not a.startswith(own)]
    backbones = options.get("backbones", "resnet18,mlp").split(",")
    sections = {int(s) for s in options.get("sections", "1,2,3,4,5,6,7").split(",")}
    torch.use_deterministic_algorithms(True, warn_only=True)  # as pearl-cl run does
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for backbone in backbones:
        config = load_config(None, [f"backbone.name={backbone}", *overrides], protocol=options.get("protocol"))
        print(f"\n== {backbone} on {config.benchmark}, batch {config.train.batch_size}, "
              f"{config.train.epochs} epoch(s) per task ==")
        if sections & {1, 2, 3, 7}:
            bench, learners, seconds = learn_two(config)
            if 2 in sections:
                probe_shares(learners, seconds)
            if 3 in sections:  # before the timed training below moves task 2's adapter
                inference(learners["finetune probe, residual"], bench.tasks[1])
            if sections & {1, 7}:
                throughput_and_flops(learners["finetune probe, residual"], bench.tasks[1], config, sections)
        if 4 in sections:
            routers_against_tasks(config)
        if sections & {5, 6}:
            end_to_end(backbone, overrides, sections, options.get("protocol"))


if __name__ == "__main__":
    main(sys.argv[1:])
