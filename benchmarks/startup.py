"""Start-up time of the ``pearl-cl`` commands against ``python -c "import torch"``, measured in
one run (each command timed in turn, median of ``repeats``, default 5) as seconds and as a ratio
to the torch import.

    .venv/bin/python benchmarks/startup.py [repeats=5] [run_dir=DIR]

``pearl-cl inspect`` needs a run directory: give one with ``run_dir=DIR`` or the script makes a
tiny one first (an MLP on 2 tasks of 100 MNIST images; not timed). It also reports which of
PyTorch, PEFT and transformers each command imported (from ``python -X importtime``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "peft", "transformers")


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _imported(argv: list[str]) -> list[str]:
    """The heavy packages ``argv`` (a ``python -m …`` command) imports."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True)
    names = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return [name for name in HEAVY if name in names]


def _tiny_run(directory: Path) -> None:
    subprocess.run([sys.executable, "-m", "pearl_cl", "run", "--out", str(directory), "--benchmark", "split-mnist",
                    "--set", "backbone.name=mlp", "--set", "backbone.width=0.1", "--set", "data.train_per_task=100",
                    "--set", "data.test_per_task=50", "--set", "train.iterations=5"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(args: list[str]) -> None:
    options = dict(a.split("=", 1) for a in args)
    repeats = int(options.get("repeats", 5))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(options["run_dir"]) if "run_dir" in options else Path(tmp) / "run"
        if "run_dir" not in options:
            _tiny_run(run_dir)
        python = sys.executable
        commands = {
            'python -c "import torch"': [python, "-c", "import torch"],
            "pearl-cl --help": [python, "-m", "pearl_cl", "--help"],
            "pearl-cl run --help": [python, "-m", "pearl_cl", "run", "--help"],
            "pearl-cl inspect RUN": [python, "-m", "pearl_cl", "inspect", str(run_dir)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, argv in commands.items():  # in turn, so that load on the machine hits all alike
                times[name].append(_seconds(argv))
        torch_s = statistics.median(times['python -c "import torch"'])
        print(f"start-up, median of {repeats} (seconds; ratio to importing torch)")
        print(f"{'command':<28} {'seconds':>8} {'x torch':>8}  imports")
        for name, argv in commands.items():
            median = statistics.median(times[name])
            print(f"{name:<28} {median:>8.3f} {median / torch_s:>8.2f}  {', '.join(_imported(argv)) or '-'}")


if __name__ == "__main__":
    main(sys.argv[1:])
