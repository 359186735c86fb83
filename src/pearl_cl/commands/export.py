"""Export one task of a run whose method has adapters as a PEFT adapter directory (our design;
``pearl-cl export``).

The directory holds PEFT's own ``adapter_config.json`` and ``adapter_model.safetensors`` (the
task's LoRA factors and BatchNorm copies), so ``peft.PeftModel.from_pretrained(backbone, DIR)``
loads it onto the backbone; next to them ``backbone.safetensors`` (the reference weights W_ref
to build that backbone from), ``head.safetensors`` (the task's head) and ``export.json`` (how to
build the backbone, the task's classes and normalisation, SHA-256 of every file). It is built
in a temporary folder beside the target and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from pearl_cl.engine.restore import load_learner, open_run
from pearl_cl.engine.runner import run_benchmark
from pearl_cl.engine.store import sha256
from pearl_cl.errors import PearlError
from pearl_cl.methods.learner import Learner
from pearl_cl.registry import METHODS

FORMATS = ("peft",)


def adapter_methods() -> list[str]:
    """The registered methods that export adapters (they implement
    :meth:`~pearl_cl.methods.learner.Learner.export_adapter`)."""
    return [name for name, cls in METHODS.items() if cls.export_adapter is not Learner.export_adapter]


def export(directory: str | Path, task: int, out: str | Path, fmt: str = "peft") -> Path:
    """Write task ``task`` (1-based, a task with an adapter) of the run in ``directory`` to the
    new directory ``out``; returns it.

    Raises:
        PearlError: unknown format, a method without adapters, the reference task, a task not
            learned, ``out`` already there, or a missing or corrupt run file.
    """
    if fmt not in FORMATS:
        raise PearlError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    opened = open_run(directory)
    config = opened.config
    if config.method not in adapter_methods():
        raise PearlError(f"{directory} is a {config.method} run; only runs of {', '.join(adapter_methods())} have PEFT adapters")
    records = opened.progress.records if opened.progress else []
    name = f"task{task}"
    record = next((r for r in records if r.task == name), None)
    if record is None:
        raise PearlError(f"--task {task}: the run learned tasks 1 to {len(records)}")
    if record.reference:
        raise PearlError(f"{name} is the reference task: it has no adapter (its weights are the backbone.safetensors "
                         f"of any other task's export); choose --task 2 or later")
    target = Path(out)
    if target.exists():
        raise PearlError(f"{target} already exists; choose a new --out directory")
    bench = run_benchmark(opened)
    learner = load_learner(config, bench, opened.store, opened.progress, learning=False)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise PearlError(f"cannot create {target}: {exc.strerror}; choose a writable --out") from exc
    try:
        how = learner.export_adapter(name, staging)
        files = {f.name: sha256(f.read_bytes()) for f in sorted(staging.iterdir())}
        manifest = {"task": name, "classes": list(record.classes), "method": config.method, **how,
                    "backbone": {"name": config.backbone.name, "width": config.backbone.width,
                                 "image_shape": list(bench.image_shape)},
                    "normalise": {"mean": list(bench.spec.mean), "std": list(bench.spec.std), "pixels": "scaled to [0, 1] first"},
                    "sha256": files}
        (staging / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
        mask = os.umask(0)
        os.umask(mask)
        for path in staging.iterdir():
            path.chmod(0o666 & ~mask)  # ordinary files' mode, not mkdtemp's private one
        staging.chmod(0o777 & ~mask)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
