"""The GPU half of benchmarks/gpu_check.sh: the demo on CUDA (fp32, bf16) against the CPU, and
training throughput, peak GPU memory and the share of training time spent producing batches.

    python benchmarks/gpu_check.py [out=DIR] [tolerance=0.5]

Runs ``pearl-cl run`` (the embedded default, seed 0) three times in fresh processes —
``train.device=cuda`` in fp32 and in bf16, and ``train.device=cpu`` — and prints the Task-IL and
class-IL average accuracy of each with its difference from the CPU run (the check: within
``tolerance`` points), the run seconds and ``peak_gpu_memory_bytes``. Then it times one epoch of
:func:`pearl_cl.learning.training.fit` of the demo's backbone on 6,000 split-mnist images on
each device (images/s) and, on CUDA, the time the same epoch's batches take to produce alone
(indexing, normalising and moving them) as a share of the epoch. Exits 1 if a check fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def _run(out: Path, *sets: str) -> tuple[dict, float]:
    argv = [sys.executable, "-m", "pearl_cl", "run", "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


def _throughput(where: str) -> tuple[float, float]:
    """(images/s of one training epoch, share of that epoch spent producing its batches) on ``where``."""
    from pearl_cl import device
    from pearl_cl.config import RunConfig
    from pearl_cl.data.batches import batch_rows, image_batches
    from pearl_cl.data.benchmarks import make_benchmark
    from pearl_cl.learning.training import fit

    task = make_benchmark("split-mnist", 0, train_per_task=6000).tasks[0]
    config = RunConfig()
    settings = config.fit_settings("train.epochs", "train.lr")
    with device.use(device.resolve(where)):
        torch.manual_seed(0)
        backbone = config.backbone.build((1, 28, 28))
        net = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.feature_dim, len(task.classes)))
        fit(net, net, net.parameters(), task.train_x, task.train_y, settings, seed=0)  # warm-up
        sync = torch.cuda.synchronize if where.startswith("cuda") else (lambda: None)
        sync()
        start = time.perf_counter()
        fit(net, net, net.parameters(), task.train_x, task.train_y, settings, seed=1)
        sync()
        epoch = time.perf_counter() - start
        rows = list(batch_rows(len(task.train_y), settings.batch_size, torch.Generator().manual_seed(1)))
        start = time.perf_counter()
        for xb in image_batches(task.train_x, rows):
            device.to_current(task.train_y[rows[0]])
        sync()
        produce = time.perf_counter() - start
    return len(task.train_y) / epoch, produce / epoch


def main(args: list[str]) -> int:
    options = dict(a.split("=", 1) for a in args)
    out, tolerance = Path(options.get("out", "/tmp/gpu_check")), float(options.get("tolerance", 0.5))
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU")
        return 1
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    runs = {name: _run(out / name, *sets) for name, sets in (
        ("cpu", ("train.device=cpu",)), ("cuda-fp32", ("train.device=cuda",)),
        ("cuda-bf16", ("train.device=cuda", "train.precision=bf16")))}
    base = runs["cpu"][0]["scenarios"]
    failed = False
    print("| run | Task-IL % | class-IL % | Δ Task-IL | Δ class-IL | run s | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, (metrics, seconds) in runs.items():
        s = metrics["scenarios"]
        deltas = [s[k]["average_accuracy"] - base[k]["average_accuracy"] for k in ("task-il", "class-il")]
        failed |= any(abs(d) > tolerance for d in deltas)
        gpu = metrics.get("peak_gpu_memory_bytes")
        print(f"| {name} | {s['task-il']['average_accuracy']:.2f} | {s['class-il']['average_accuracy']:.2f} | "
              f"{deltas[0]:+.2f} | {deltas[1]:+.2f} | {seconds:.0f} | {'-' if gpu is None else f'{gpu / 2**20:,.0f}'} |")
    cpu_rate, _ = _throughput("cpu")
    gpu_rate, waiting = _throughput("cuda")
    print(f"\ntraining images/s, one epoch of the demo's backbone on 6,000 images: CPU {cpu_rate:,.0f}, GPU {gpu_rate:,.0f} "
          f"({gpu_rate / cpu_rate:.1f}x); producing the GPU epoch's batches alone took {100 * waiting:.1f}% of it")
    print("accuracy within tolerance: " + ("no" if failed else "yes") + f" (±{tolerance} points of the CPU run)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
