"""pearl-cl: rehearsal-free continual learning with dynamic-rank LoRA adapters (PEARL).

Library entry points: :func:`load_config` builds a :class:`RunConfig`, :func:`run` learns a
benchmark and writes the run directory, :func:`summary` formats the result.
"""

from pearl_cl.config import RunConfig, load_config
from pearl_cl.errors import ConfigError, DataError, PearlError, TrainingError
from pearl_cl.report import summary
from pearl_cl.runner import RunResult, run

__all__ = ["ConfigError", "DataError", "PearlError", "RunConfig", "RunResult", "TrainingError", "load_config", "run", "summary"]
__version__ = "0.1.0"
