"""Crash sweep: kill a run with SIGKILL at moments spread over every phase, resume it, compare.

    .venv/bin/python benchmarks/fault_sweep.py [moments=24] [keep=DIR] [set=KEY=VALUE;KEY=VALUE]

A small PEARL run (split-mnist, the MLP, 300 training and 100 test images per task, one epoch)
is first run once, uninterrupted, with a tracer (``sys.setprofile``) that numbers every event of
the phases below in the order they happen:

- ``reference training``, ``probe``, ``adapter training``: an optimiser step inside that phase;
- ``rank step``: the rank rule (``allocate_ranks``);
- ``statistics``: a task's router statistics (``task_statistics``);
- ``evaluation``: the accuracy of the tasks so far (``evaluate``);
- ``write``: a run file handed to the store (``RunStore.write_bytes``), before anything is written;
- ``announced``: the manifest lists the file's new digest as ``next``; the file's temporary not
  yet created (``tempfile.mkstemp``);
- ``manifest update``: the file renamed into place, the manifest not yet updated;
- ``rename``: the file written to its temporary name, not yet renamed (``os.replace``);
- ``manifest rename``: a new manifest written to its temporary name, not yet renamed.

Then, for ``moments`` events spread evenly over each phase's occurrences (and so over the
tasks), a fresh run of the same config is started in its own process with the same tracer,
killed with SIGKILL at that event, and continued as a user would: ``pearl-cl run --resume DIR``
when the run directory holds a ``config.yaml``, else the same ``pearl-cl run`` again. The final
``metrics.json`` must equal the uninterrupted run's in every figure but times, memory and device
(accuracy matrices, ranks, parameters, BWT/FWT, routing), ``ranks.csv`` must be byte-identical,
``pearl-cl inspect`` must find every file matching the manifest, and no temporary file may be
left. It prints one line per moment and ``k/N identical``; the exit status is 1 when any differs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RUN = ["run", "--benchmark", "split-mnist", "--set", "backbone.name=mlp", "--set", "data.train_per_task=300",
       "--set", "data.test_per_task=100", "--set", "train.epochs=1", "--set", "train.reference_epochs=1",
       "--set", "train.batch_size=32", "--set", "pearl.probe_epochs=1", "--set", "routing.sample=200"]
PHASES = ("reference training", "probe", "adapter training", "rank step", "statistics", "evaluation", "write",
          "announced", "manifest update", "rename", "manifest rename")
FILE_PHASES = PHASES[6:]  # the events of one file's write, printed with the file's name
STEP_PHASES = PHASES[:3]  # an optimiser step is counted in the phase it happens in
UNTIMED = ("seconds", "time", "peak", "memory", "device", "precision", "started", "finished", "torch", "python",
           "platform", "host", "version")


def _tracer(kill_at: int | None, trace: list[dict[str, Any]] | None):
    """A ``sys.setprofile`` function that numbers the events of :data:`PHASES` and kills this
    process with SIGKILL at event ``kill_at`` (or records every event in ``trace``)."""
    import inspect
    import tempfile

    import torch

    from pearl_cl.core import probe, rank
    from pearl_cl.engine import engine, store
    from pearl_cl.methods import branches, pearl
    from pearl_cl.routers import statistics

    markers = {
        pearl.Pearl._learn_reference.__code__: "reference training",
        probe.run_probe.__code__: "probe",
        pearl.Pearl._learn_adapter.__code__: "adapter training",
        rank.allocate_ranks.__code__: "rank step",
        statistics.task_statistics.__code__: "statistics",
        branches.TaskBranches.evaluate.__code__: "evaluation",
        store.RunStore.write_bytes.__code__: "write",
        store.RunStore._write_manifest.__code__: "manifest update",
    }
    steps = {inspect.unwrap(torch.optim.Adam.step).__code__, inspect.unwrap(torch.optim.SGD.step).__code__}
    learn = engine.learn_guarded.__code__
    temporary = tempfile.mkstemp.__code__
    state = {"count": 0, "phases": [""], "task": 0, "file": "", "manifests": 0}

    def event(phase: str) -> None:
        state["count"] += 1
        if trace is not None:
            trace.append({"event": state["count"], "phase": phase, "task": state["task"], "file": state["file"]})
        if state["count"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def profile(frame, what, arg):
        if what == "c_call":
            if arg is os.replace:  # inside atomic_write_bytes, whose target is `path`
                event("manifest rename" if Path(frame.f_locals.get("path", "")).name == store.MANIFEST else "rename")
            return
        code = frame.f_code
        if what == "return":
            if markers.get(code) in STEP_PHASES:
                state["phases"].pop()  # back to the phase around it (a probe inside adapter training)
            return
        if what != "call":
            return
        if code is learn:
            state["task"] += 1
        elif code is temporary:
            if Path(str(frame.f_back.f_locals.get("path", ""))).name != store.MANIFEST:  # atomic_write_bytes's
                event("announced")
        elif code in steps:
            if state["phases"][-1]:
                event(state["phases"][-1])
        elif code in markers:
            phase = markers[code]
            if phase in STEP_PHASES:
                state["phases"].append(phase)
            else:
                if phase == "write":
                    state["file"], state["manifests"] = frame.f_locals.get("relative", ""), 0
                elif phase == "manifest update":  # a write's first manifest announces (the state of "write")
                    state["manifests"] += 1
                    if state["manifests"] == 1:
                        return
                event(phase)

    return profile


def child(argv: list[str]) -> int:
    """Run ``pearl-cl`` with ``argv`` under the tracer (``--kill-at K`` or ``--trace FILE`` first)."""
    mode, value, *rest = argv
    from pearl_cl.commands import cli

    trace: list[dict[str, Any]] | None = [] if mode == "--trace" else None
    sys.setprofile(_tracer(int(value) if mode == "--kill-at" else None, trace))
    try:
        code = cli.main(rest)
    finally:
        sys.setprofile(None)
    if trace is not None:
        Path(value).write_text(json.dumps(trace))
    return code


def _pearl(args: list[str], traced: list[str] | None = None) -> subprocess.CompletedProcess:
    """``pearl-cl args`` in a fresh process (under the tracer with ``traced`` = its two arguments)."""
    command = [sys.executable, __file__, "child", *traced, *args] if traced else [sys.executable, "-m", "pearl_cl", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})


def figures(directory: Path) -> dict[str, Any]:
    """``metrics.json`` without its times, memory and machine entries."""
    def keep(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: keep(v) for k, v in value.items() if not any(word in k for word in UNTIMED)}
        if isinstance(value, list):
            return [keep(v) for v in value]
        return value

    return keep(json.loads((directory / "metrics.json").read_text()))


def spread(trace: list[dict[str, Any]], moments: int) -> list[dict[str, Any]]:
    """``moments`` events of ``trace``: as many from each phase as fit (phases spread over
    :data:`PHASES` when there are fewer moments than phases), evenly spread over that phase's
    occurrences, in the order they happen."""
    by_phase = {p: [e for e in trace if e["phase"] == p] for p in PHASES}
    present = [p for p in PHASES if by_phase[p]]
    if moments < len(present):  # fewer moments than phases: phases spread over the list
        present = [present[int((j + 0.5) * len(present) / moments)] for j in range(moments)]
    chosen = []
    for k, phase in enumerate(present):
        events = by_phase[phase]
        n = min(len(events), moments // len(present) + (k < moments % len(present)))
        chosen += [events[int((j + 0.5) * len(events) / n)] for j in range(n)]
    return sorted(chosen, key=lambda e: e["event"])


def check(directory: Path, expected: dict[str, Any], ranks: bytes) -> list[str]:
    """What differs between the finished run in ``directory`` and the uninterrupted one."""
    problems = []
    if figures(directory) != expected:
        problems.append("metrics.json differs")
    if (directory / "ranks.csv").read_bytes() != ranks:
        problems.append("ranks.csv differs")
    left = sorted(str(p.relative_to(directory)) for p in directory.rglob(".*.tmp"))
    if left:
        problems.append(f"temporary files left: {', '.join(left)}")
    inspected = _pearl(["inspect", str(directory)])
    if inspected.returncode != 0:
        problems.append(f"inspect exit {inspected.returncode}: {(inspected.stdout + inspected.stderr).strip()[-200:]}")
    return problems


def sweep(moments: int, work: Path, extra: list[str]) -> int:
    """Run the sweep in ``work``; the number of moments whose final run differs."""
    base = work / "uninterrupted"
    trace_file = work / "trace.json"
    done = _pearl([*RUN, *extra, "--out", str(base)], ["--trace", str(trace_file)])
    if done.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{done.stderr}")
    trace = json.loads(trace_file.read_text())
    expected, ranks = figures(base), (base / "ranks.csv").read_bytes()
    counts = {p: sum(e["phase"] == p for e in trace) for p in PHASES}
    print(f"{len(trace)} events: " + ", ".join(f"{p} {n}" for p, n in counts.items()))
    chosen = spread(trace, moments)
    failures = 0
    for k, moment in enumerate(chosen, 1):
        directory = work / f"killed-{moment['event']}"
        args = [*RUN, *extra, "--out", str(directory)]
        killed = _pearl(args, ["--kill-at", str(moment["event"])])
        where = f"event {moment['event']:>5}  task {moment['task']}  {moment['phase']}" + (
            f" ({moment['file']})" if moment["phase"] in FILE_PHASES else "")
        if killed.returncode != -signal.SIGKILL:
            print(f"{k:>2}. {where}: NOT KILLED (exit {killed.returncode}) {killed.stderr.strip()[-300:]}")
            failures += 1
            continue
        left = len(list(directory.rglob(".*.tmp")))
        resuming = (directory / "config.yaml").is_file()
        resumed = _pearl(["run", "--resume", str(directory)] if resuming else args)
        how = "resumed" if resuming else "run again"
        problems = [f"{how}: exit {resumed.returncode}: {resumed.stderr.strip()[-300:]}"] if resumed.returncode else \
            check(directory, expected, ranks)
        failures += bool(problems)
        print(f"{k:>2}. {where}: {left} temporary file(s) after the kill; {how}, "
              + ("identical" if not problems else "; ".join(problems)), flush=True)
        if not problems:
            shutil.rmtree(directory)
    print(f"{len(chosen) - failures}/{len(chosen)} identical to the uninterrupted run, no temporary file left")
    return failures


def main(argv: list[str]) -> int:
    """Parse ``key=value`` arguments and run the sweep."""
    if argv[:1] == ["child"]:
        return child(argv[1:])
    options = dict(a.split("=", 1) for a in argv)
    extra = [x for kv in options.get("set", "").split(";") if kv for x in ("--set", kv)]
    moments = int(options.get("moments", 24))
    if "keep" in options:
        work = Path(options["keep"])
        work.mkdir(parents=True, exist_ok=True)
        return int(sweep(moments, work, extra) > 0)
    with tempfile.TemporaryDirectory(prefix="fault-sweep-") as folder:
        return int(sweep(moments, Path(folder), extra) > 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
