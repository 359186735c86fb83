"""pearl-cl: rehearsal-free continual learning with dynamic-rank LoRA adapters (PEARL).

Library entry points: :func:`load_config` builds a :class:`RunConfig`, :func:`run` learns a
benchmark and writes the run directory, :func:`summary` formats the result; :func:`compare`
runs several methods (:func:`parse_methods`) over several seeds; :func:`resume`,
:func:`rollback` and :func:`inspect` work on a run directory. New methods, routers, backbones,
benchmarks and probes register in :mod:`pearl_cl.registry`. Names are imported on first use
(PEP 562), so ``import pearl_cl`` does not load PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

from pearl_cl.errors import ConfigError, DataError, PearlError, TrainingError

_LAZY = {
    "RunConfig": "pearl_cl.config", "load_config": "pearl_cl.config",
    "run": "pearl_cl.engine.runner", "RunResult": "pearl_cl.engine.engine",
    "resume": "pearl_cl.engine.operations", "rollback": "pearl_cl.engine.operations", "inspect": "pearl_cl.engine.operations",
    "compare": "pearl_cl.commands.compare", "parse_methods": "pearl_cl.commands.compare",
    "summary": "pearl_cl.commands.report",
}

__all__ = ["ConfigError", "DataError", "PearlError", "TrainingError", *_LAZY]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pearl_cl' has no attribute {name!r}")
