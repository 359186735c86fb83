"""One writer per run directory (our design, on the ``filelock`` library's OS file locks).

``run``, ``resume`` and ``rollback`` hold an exclusive lock on ``<run>/.pearl-cl.lock`` while they
write the directory; a second writer fails at once with an error naming the holder's process and
host (``<run>/.pearl-cl.lock.owner``, written by the holder). The lock is the operating system's
(``flock``), so it ends with its process: a lock left by a process that was killed is free, and
the next writer takes it over. Neither file enters the manifest. Taking the lock deletes the
temporary files a killed writer left (:func:`~pearl_cl.engine.store.remove_temporaries`).
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pearl_cl.engine.store import remove_temporaries, write_failure
from pearl_cl.errors import PearlError

LOCK = ".pearl-cl.lock"
OWNER = ".pearl-cl.lock.owner"


@contextmanager
def writing(directory: Path, writer: bool = True) -> Iterator[None]:
    """Hold the write lock of the existing run directory ``directory`` inside the block;
    a process that does not write (``writer`` False: the other processes under torchrun) takes none.

    Raises:
        PearlError: another live process holds the lock (names its PID and host), or the
            directory cannot be written (:func:`~pearl_cl.engine.store.write_failure`).
    """
    if not writer:
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(directory / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = (directory / OWNER).read_text().strip()
        except OSError:
            holder = "another process"
        raise PearlError(f"{directory} is being written by {holder or 'another process'}; wait until it ends "
                         f"(a killed process frees the lock by itself), or write to another directory") from None
    except OSError as exc:
        raise write_failure(directory / LOCK, exc, directory) from exc
    try:
        try:
            (directory / OWNER).write_text(f"process {os.getpid()} on {socket.gethostname()}\n")
            remove_temporaries(directory)
        except OSError as exc:
            raise write_failure(Path(exc.filename or directory / OWNER), exc, directory) from exc
        yield
    finally:
        lock.release()
