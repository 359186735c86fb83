"""The ``pearl-cl`` command (our design). ``pearl-cl run`` with no arguments runs the embedded
default: PEARL on split-mnist with the reduced ResNet-18, sized for a 2-core machine.
``pearl-cl compare`` runs several methods over several seeds and prints one table;
``pearl-cl report`` writes the plots and ``report.md`` of a run or comparison (``run`` writes
them too when it finishes).

Exit status: 0 on success, 2 on a user error (the message names the input and the fix).
Building the parser imports neither PyTorch nor PEFT (every command imports what it needs when it
runs), so ``pearl-cl --help`` answers at once; ``benchmarks/startup.py`` measures it.
"""

from __future__ import annotations

import argparse
import sys

from pearl_cl.config import PROTOCOLS, SCENARIOS, load_config, validate
from pearl_cl.errors import ConfigError, PearlError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pearl-cl``."""
    parser = argparse.ArgumentParser(prog="pearl-cl", description="Rehearsal-free continual learning with dynamic-rank LoRA (PEARL).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="learn a benchmark task by task and write a run directory")
    _config_arguments(run)
    run.add_argument("--seed", type=int, help="random seed (same config and seed, same numbers)")
    run.add_argument("--method", help="a registered continual-learning method (default: the registered default); "
                                      "--help-config lists them")
    run.add_argument("--help-config", action="store_true",
                     help="list the registered methods, routers, backbones, benchmarks and probes, and every config "
                          "key with its default and type, then exit")
    run.add_argument("--out", help="run directory to create (default: runs/<benchmark>-<method>-seed<seed>-<time>)")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue RUN_DIR after its last complete task, with its stored config (options may only "
                          "repeat it, or move data.root)")
    back = sub.add_parser("rollback", help="remove the tasks after --to-task from a run directory (resume continues there)")
    back.add_argument("run_dir", metavar="RUN_DIR")
    back.add_argument("--to-task", type=int, required=True, metavar="K", help="keep tasks 1..K")
    pred = sub.add_parser("predict", help="predict the class of images with a saved run")
    pred.add_argument("run_dir", metavar="RUN_DIR")
    pred.add_argument("images", metavar="IMAGE", nargs="+", help="PNG, JPEG or .npy files of the benchmark's size and channels")
    pred.add_argument("--task", type=int, metavar="K", help="Task-IL: use task K's branch (default: no task label, routed)")
    insp = sub.add_parser("inspect", help="print a run's tasks, ranks per layer, parameters and metrics; verify its files")
    insp.add_argument("run_dir", metavar="RUN_DIR")
    exp = sub.add_parser("export", help="write one task's adapter as a PEFT directory (PeftModel.from_pretrained loads it)")
    exp.add_argument("run_dir", metavar="RUN_DIR")
    exp.add_argument("--task", type=int, required=True, metavar="K", help="the task to export (2 or later)")
    exp.add_argument("--format", default="peft", help="export format (peft)")
    exp.add_argument("--out", required=True, help="directory to create")
    cmp = sub.add_parser("compare", help="run several methods over several seeds and print one comparison table",
                         description="Run several methods over several seeds, one after another in this process, and "
                                     "print one table. A run that fails stops the comparison; the runs finished before "
                                     "it stay written in the comparison directory.")
    _config_arguments(cmp)
    cmp.add_argument("--methods", help="comma-separated methods and the variants they declare, e.g. a fixed rank or a "
                                       "matched budget (default: every registered method's own list; run --help-config "
                                       "lists the methods)")
    cmp.add_argument("--scenarios", help="comma-separated scenarios (task-il,domain-il,class-il): each single-head method "
                                         "is trained once per scenario, with the protocol's values for it; methods with a "
                                         "branch per task run once and report every scenario (default: the config's scenario)")
    cmp.add_argument("--seeds", type=int, default=3, help="number of seeds, counted up from --seed (default 3)")
    cmp.add_argument("--seed", type=int, help="first seed (default: the config's, 0)")
    cmp.add_argument("--out", help="comparison directory to create (default: runs/compare-<benchmark>-<time>)")
    cmp.add_argument("--jobs", type=int, default=1, metavar="K",
                     help="runs at once, each in its own process with 1/K of the threads (default 1: one after another)")
    rep = sub.add_parser("report", help="write the plots (plots/*.png) and report.md of a run or comparison",
                         description="Write the accuracy-matrix, rank and accuracy-against-parameters plots and a "
                                     "one-page report.md. The first directory is the main run, or a comparison "
                                     "directory (its PEARL run of the first seed, every method as a point); the "
                                     "others (e.g. fixed-rank LoRA runs of the same benchmark) add points to the "
                                     "accuracy-against-parameters plot.")
    rep.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run or comparison directory")
    rep.add_argument("--out", help="folder to write plots/ and report.md into (default: the first RUN_DIR)")
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
    parser.add_argument("--pretrained", metavar="PATH",
                        help="checkpoint (.safetensors / .pth) to start the backbone from, or 'imagenet' for "
                             "efficientnet-lite0 (backbone.pretrained)")


def _load(args: argparse.Namespace, **fields: str | int | None):
    """The config from ``--protocol``, ``--config``, ``--set`` and the named options."""
    values = {key: value for key, value in (("benchmark", args.benchmark), ("data__root", args.data_root),
                                                            ("backbone__pretrained", args.pretrained), *fields.items())
              if value is not None}
    return load_config(args.config, args.overrides, protocol=args.protocol, **values)


def _print_result(result) -> None:
    from pearl_cl.commands.report import format_matrix, summary

    for name, acc in result.accuracy.items():
        print(f"{name}:")
        print(format_matrix(acc))
        print()
    print(summary(result))


def _resume_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` and the named options of ``run --resume`` as ``key=value`` overrides."""
    if args.config or args.protocol:
        raise ConfigError("--resume uses the run's own config.yaml; drop --config and --protocol")
    named = (("seed", args.seed), ("out", args.out), ("method", args.method), ("benchmark", args.benchmark),
             ("data.root", args.data_root), ("backbone.pretrained", args.pretrained))
    return args.overrides + [f"{key}={value}" for key, value in named if value is not None]


def _help_config() -> None:
    from pearl_cl.config import describe_keys
    from pearl_cl.registry import BACKBONES, BENCHMARKS, METHODS, PROBES, ROUTERS

    for registry in (METHODS, ROUTERS, BACKBONES, BENCHMARKS, PROBES):
        try:
            default = f" (default {registry.default()})"
        except ConfigError:
            default = ""
        print(f"{registry.kind}s ({registry.key}){default}: {', '.join(registry.names())}")
    print(f"protocols (--protocol): {', '.join(PROTOCOLS)}")
    print()
    print(describe_keys(), end="")


def _run(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from pearl_cl import device
    from pearl_cl.commands.report import task_line, write_report
    from pearl_cl.learning import distributed
    from pearl_cl.engine.operations import resume
    from pearl_cl.engine.runner import run

    if args.help_config:
        _help_config()
        return

    def on_task(record, acc):
        tqdm.write(task_line(record, acc))

    on_task = on_task if distributed.is_main() else None
    if args.resume:
        result = resume(args.resume, _resume_overrides(args), on_task=on_task)
    else:
        config = _load(args, seed=args.seed, out=args.out, method=args.method)
        validate(config)  # a bad value is the only line printed
        if distributed.is_main():
            print(f"pearl-cl run: {config.benchmark} · {config.method} · seed {config.seed} · device "
                  f"{device.resolve(config.train.device)} ({config.train.precision})", flush=True)
        result = run(config, on_task=on_task)
    if not distributed.is_main():
        return
    _print_result(result)
    report = write_report([result.directory])[-1]
    print(f"report: {report} (plots in {report.parent / 'plots'})")


def _rollback(args: argparse.Namespace) -> None:
    from pearl_cl.engine.operations import rollback

    result = rollback(args.run_dir, args.to_task)
    print(f"{args.run_dir}: kept tasks 1..{args.to_task}; continue with pearl-cl run --resume {args.run_dir}")
    _print_result(result)


def _predict(args: argparse.Namespace) -> None:
    from pearl_cl.commands.predict import predict

    for p in predict(args.run_dir, args.images, args.task):
        name = f" ({p.class_name})" if p.class_name else ""
        print(f"{p.path}\tclass {p.label}{name}\ttask {p.task or '-'}\tconfidence {p.confidence:.1f}%")


def _inspect(args: argparse.Namespace) -> int:
    from pearl_cl.engine.operations import inspect

    result, bad = inspect(args.run_dir)
    _print_result(result)
    print(f"status: {result.metrics.get('status', 'unknown')}")
    print("files: " + ("every file matches manifest.json" if not bad else "CORRUPT OR MISSING: " + ", ".join(bad)))
    return 1 if bad else 0


def _export(args: argparse.Namespace) -> None:
    from pearl_cl.commands.export import export

    target = export(args.run_dir, args.task, args.out, args.format)
    print(f"wrote {target}: PeftModel.from_pretrained(backbone, '{target}', adapter_name='task{args.task}') loads it "
          f"(see {target / 'export.json'})")


def _compare(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from pearl_cl.commands.compare import compare
    from pearl_cl.commands.comparison import default_methods, parse_methods
    from pearl_cl.commands.report import compare_line, compare_table

    config = _load(args, seed=args.seed)
    specs = parse_methods(args.methods if args.methods is not None else default_methods())
    seeds = list(range(config.seed, config.seed + args.seeds))
    scenarios = None
    if args.scenarios is not None:
        names = [part.strip() for part in args.scenarios.split(",") if part.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown or not names or len(set(names)) < len(names):
            raise ConfigError(f"--scenarios {args.scenarios!r}: give distinct scenarios from {', '.join(SCENARIOS)}")
        scenarios = {name: _load(args, seed=args.seed, scenario=name) for name in names}
    result = compare(config, specs, seeds, args.out, on_run=lambda row: tqdm.write(compare_line(row)), jobs=args.jobs,
                     scenarios=scenarios)
    print(compare_table(result))


def _report(args: argparse.Namespace) -> None:
    from pearl_cl.commands.report import write_report

    for path in write_report(args.run_dirs, args.out):
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pearl-cl`` console script; returns the exit status.

    Under ``torchrun`` with several processes, ``run`` trains data-parallel
    (:mod:`pearl_cl.learning.distributed`): process 0 prints and writes; an error names its process.
    """
    args = build_parser().parse_args(argv)
    from pearl_cl.learning import distributed

    try:
        if distributed.launched() and args.command != "run":
            raise ConfigError(f"only pearl-cl run works under torchrun; run pearl-cl {args.command} as one process")
        if args.command == "run":
            _run(args)
        else:
            code = {"compare": _compare, "rollback": _rollback, "predict": _predict, "inspect": _inspect,
                    "export": _export, "report": _report}[args.command](args)
            return code or 0
    except PearlError as exc:
        where = f" (process {distributed.rank()} of {distributed.world_size()})" if distributed.active() else ""
        print(f"pearl-cl: error{where}: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
