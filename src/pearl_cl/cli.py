"""The ``pearl-cl`` command (our design). ``pearl-cl run`` with no arguments runs the embedded
default: PEARL on split-mnist with the reduced ResNet-18, sized for a 2-core machine.
``pearl-cl compare`` runs several methods over several seeds and prints one table.

Exit status: 0 on success, 2 on a user error (the message names the input and the fix).
"""

from __future__ import annotations

import argparse
import sys

from pearl_cl.compare import ALL_METHODS
from pearl_cl.config import PROTOCOLS, load_config
from pearl_cl.errors import PearlError
from pearl_cl.methods import METHODS



def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pearl-cl``."""
    parser = argparse.ArgumentParser(prog="pearl-cl", description="Rehearsal-free continual learning with dynamic-rank LoRA (PEARL).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="learn a benchmark task by task and write a run directory")
    _config_arguments(run)
    run.add_argument("--seed", type=int, help="random seed (same config and seed, same numbers)")
    run.add_argument("--method", help=f"continual-learning method: {', '.join(METHODS)} (default pearl)")
    run.add_argument("--out", help="run directory to create (default: runs/<benchmark>-<method>-seed<seed>-<time>)")
    cmp = sub.add_parser("compare", help="run several methods over several seeds and print one comparison table",
                         description="Run several methods over several seeds, one after another in this process, and "
                                     "print one table. A run that fails stops the comparison; the runs finished before "
                                     "it stay written in the comparison directory.")
    _config_arguments(cmp)
    cmp.add_argument("--methods", default=ALL_METHODS,
                     help=f"comma-separated methods, also lora-rK (fixed rank K) and lora-matched (default: {ALL_METHODS})")
    cmp.add_argument("--seeds", type=int, default=3, help="number of seeds, counted up from --seed (default 3)")
    cmp.add_argument("--seed", type=int, help="first seed (default: the config's, 0)")
    cmp.add_argument("--out", help="comparison directory to create (default: runs/compare-<benchmark>-<time>)")
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config options ``run`` and ``compare`` share."""
    parser.add_argument("--config", help="YAML config file (keys as in config.yaml of any run)")
    parser.add_argument("--protocol", choices=list(PROTOCOLS),
                        help="start from a named protocol, e.g. classic-split-mnist (MLP 2x400, Adam 0.001, batch 128, "
                             "2000 iterations per task); --config and --set apply on top")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set pearl.rank_rule=energy (repeatable)")
    parser.add_argument("--benchmark", help="benchmark name, e.g. split-mnist or split-fashion-mnist")
    parser.add_argument("--data-root", help="folder with torchvision's dataset layout")


def _load(args: argparse.Namespace, **fields: str | int | None):
    """The config from ``--protocol``, ``--config``, ``--set`` and the named options."""
    values = {key: value for key, value in (("benchmark", args.benchmark), ("data__root", args.data_root), *fields.items())
              if value is not None}
    return load_config(args.config, args.overrides, protocol=args.protocol, **values)


def _run(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from pearl_cl.report import format_matrix, summary, task_line
    from pearl_cl.runner import run

    config = _load(args, seed=args.seed, out=args.out, method=args.method)
    result = run(config, on_task=lambda record, acc: tqdm.write(task_line(record, acc)))
    for name, acc in result.accuracy.items():
        print(f"{name}:")
        print(format_matrix(acc))
        print()
    print(summary(result))


def _compare(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from pearl_cl.compare import compare, parse_methods
    from pearl_cl.report import compare_line, compare_table

    config = _load(args, seed=args.seed)
    specs = parse_methods(args.methods)
    seeds = list(range(config.seed, config.seed + args.seeds))
    result = compare(config, specs, seeds, args.out, on_run=lambda row: tqdm.write(compare_line(row)))
    print(compare_table(result))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pearl-cl`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            _run(args)
        elif args.command == "compare":
            _compare(args)
    except PearlError as exc:
        print(f"pearl-cl: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
