"""pearl-cl: rehearsal-free continual learning with dynamic-rank LoRA adapters (PEARL).

Library entry points: :func:`load_config` builds a :class:`RunConfig`, :func:`run` learns a
benchmark and writes the run directory, :func:`summary` formats the result; :func:`compare`
runs several methods (:func:`parse_methods`) over several seeds.
"""

from pearl_cl.commands.compare import compare, parse_methods
from pearl_cl.config import RunConfig, load_config
from pearl_cl.errors import ConfigError, DataError, PearlError, TrainingError
from pearl_cl.commands.report import summary
from pearl_cl.engine.runner import RunResult, run

__all__ = ["ConfigError", "DataError", "PearlError", "RunConfig", "RunResult", "TrainingError", "compare", "load_config",
           "parse_methods", "run", "summary"]
__version__ = "0.1.0"
