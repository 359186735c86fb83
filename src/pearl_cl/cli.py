"""The ``pearl-cl`` command (our design). ``pearl-cl run`` with no arguments runs the embedded
default: PEARL on split-mnist with the reduced ResNet-18, sized for a 2-core machine.

Exit status: 0 on success, 2 on a user error (the message names the input and the fix).
"""

from __future__ import annotations

import argparse
import sys

from pearl_cl.config import load_config
from pearl_cl.errors import PearlError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pearl-cl``."""
    parser = argparse.ArgumentParser(prog="pearl-cl", description="Rehearsal-free continual learning with dynamic-rank LoRA (PEARL).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="learn a benchmark task by task and write a run directory")
    run.add_argument("--config", help="YAML config file (keys as in config.yaml of any run)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config key, e.g. --set pearl.rank_rule=energy (repeatable)")
    run.add_argument("--seed", type=int, help="random seed (same config and seed, same numbers)")
    run.add_argument("--out", help="run directory to create (default: runs/<benchmark>-<method>-seed<seed>-<time>)")
    run.add_argument("--benchmark", help="benchmark name, e.g. split-mnist or split-fashion-mnist")
    run.add_argument("--data-root", help="folder with torchvision's dataset layout")
    return parser


def _run(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from pearl_cl.report import format_matrix, summary, task_line
    from pearl_cl.runner import run

    values = {key: value for key, value in (("seed", args.seed), ("out", args.out), ("benchmark", args.benchmark),
                                            ("data__root", args.data_root)) if value is not None}
    config = load_config(args.config, args.overrides, **values)
    result = run(config, on_task=lambda record, acc: tqdm.write(task_line(record, acc)))
    for name, acc in result.accuracy.items():
        print(f"{name}:")
        print(format_matrix(acc))
        print()
    print(summary(result))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pearl-cl`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            _run(args)
    except PearlError as exc:
        print(f"pearl-cl: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
