"""The run directory: atomic writes and a manifest of SHA-256 checksums (our design; docs/operations.md).

Every file is written to a temporary name in the same folder, flushed to disk, then renamed over
its final name, so a reader never sees a half-written file. ``manifest.json`` (itself written
the same way) lists every file with its size in bytes and SHA-256 digest; :meth:`RunStore.verify`
checks them. Before a file is renamed into place, the manifest records the new file's digest as
the entry's ``next``; after, the entry holds the new digest alone. A process killed between the
two leaves a file that matches one of the two digests its entry lists, and it reads as intact;
any other content is corrupt.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from pearl_cl.errors import PearlError

MANIFEST = "manifest.json"
TEMPORARY = ".*.tmp"  # the names atomic_write_bytes gives its temporary files
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file an ordinary file's mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_failure(path: Path, exc: OSError, root: Path) -> PearlError:
    """The error to raise when writing ``path`` in the run directory ``root`` failed with ``exc``:
    a full disk (ENOSPC, EDQUOT) names the free space to make and an I/O error (EIO) the disk,
    both saying that the files written before are intact and how to go on; any other names the
    permissions. Our design."""
    again = (f"then run the command again (pearl-cl run --resume {root} continues a run after its last finished "
             f"task; the files written before are intact)")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PearlError(f"no space left on the disk of {root} while writing {path.name}: free space there "
                          f"(at least {_MEGABYTES_TO_FREE} MB), {again}")
    if exc.errno == errno.EIO:
        return PearlError(f"the disk of {root} reported an I/O error while writing {path.name}: check the disk "
                          f"(dmesg, fsck), {again}")
    return PearlError(f"cannot write {path}: {exc.strerror or exc}; check that {root} is writable or choose --out DIR")


_MEGABYTES_TO_FREE = 100  # a task's files are a few MB; a round figure the user can act on


def remove_temporaries(root: Path) -> None:
    """Delete the temporary files an interrupted :func:`atomic_write_bytes` left under ``root``
    (a process killed between creating one and renaming it). Call it only while holding the
    run's write lock (:mod:`pearl_cl.engine.lock`)."""
    for path in root.rglob(TEMPORARY):
        if path.is_file():
            path.unlink(missing_ok=True)


def sha256(data: bytes) -> str:
    """Hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """Relative path → entry from ``root/manifest.json`` (empty when there is none). An entry is
    ``{"bytes", "sha256"}``, with ``next`` while a write of the file is under way (module
    docstring); a file never written yet may have only ``next``.

    Raises:
        PearlError: the manifest exists but is unreadable, lists a path outside ``root``
            (absolute or with ``..``), or holds a malformed entry (names it and the fix).
    """
    manifest = root / MANIFEST
    if not manifest.exists():
        return {}
    try:
        files = dict(json.loads(manifest.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise PearlError(f"{manifest} is unreadable or not a manifest ({exc}); the run directory's checksums "
                         f"are lost: restore the file from a backup or start a new run") from exc
    outside = [name for name in files if not _inside(name)]
    if outside:
        raise PearlError(f"{manifest} lists {outside[0]!r}, a path outside the run directory; the manifest was edited "
                         f"or damaged: restore it from a backup")
    malformed = [name for name, entry in files.items() if not _well_formed(entry)]
    if malformed:
        raise PearlError(f"{manifest}: the entry of {malformed[0]} is not a size and SHA-256; the manifest was edited "
                         f"or damaged: restore it from a backup")
    return files


def _well_formed(entry: Any) -> bool:
    """Whether ``entry`` is a manifest entry: hex SHA-256 digests under ``sha256`` and/or ``next``."""
    if not isinstance(entry, dict) or not ({"sha256", "next"} & entry.keys()):
        return False
    digests = [entry[key] for key in ("sha256", "next") if key in entry]
    return all(isinstance(d, str) and len(d) == 64 and all(c in "0123456789abcdef" for c in d) for d in digests)


def _entry(data: bytes) -> dict[str, Any]:
    """The manifest entry of a file holding ``data``."""
    return {"bytes": len(data), "sha256": sha256(data)}


def _digests(entry: dict[str, Any] | None) -> list[str]:
    """The SHA-256 digests a manifest entry lists (``sha256``, then ``next``)."""
    return [entry[key] for key in ("sha256", "next") if key in entry] if entry else []


def _inside(relative: Any) -> bool:
    """Whether ``relative`` names a file inside a run directory: a relative POSIX path without ``..``."""
    if not isinstance(relative, str) or not relative or "\\" in relative:
        return False
    path = PurePosixPath(relative)
    return not path.is_absolute() and ".." not in path.parts


class RunStore:
    """A run directory; every write goes through :meth:`write_bytes` and is recorded in the manifest.

    Raises:
        PearlError: the directory cannot be created or written (names it and the fix).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PearlError(f"cannot create run directory {self.root}: {exc.strerror}; choose another with --out DIR") from exc
        self.files = read_manifest(self.root)

    def write_bytes(self, relative: str, data: bytes) -> Path:
        """Write ``data`` at ``root/relative`` and record it in the manifest; returns the path.

        Raises:
            PearlError: the file or the manifest cannot be written (names the path and the fix).
        """
        path = self.root / relative
        entry, before = _entry(data), self.files.get(relative)
        self.files[relative] = {**(before or {}), "next": entry["sha256"]}  # announced before the rename
        self._write_manifest()
        try:
            self._put(path, data)
        except OSError as exc:
            self._after_failure(relative, before, entry["sha256"])
            raise write_failure(path, exc, self.root) from exc
        self.files[relative] = entry
        self._write_manifest()
        return path

    def _after_failure(self, relative: str, before: dict[str, Any] | None, digest: str) -> None:
        """List ``relative`` as it is on disk after a write of content ``digest`` failed: the new
        content when the rename happened before the failure, else the entry from before (none
        for a new file). Best effort: on a full disk the manifest may keep the announce, which
        reads as intact and :meth:`settle` clears later."""
        path = self.root / relative
        data = path.read_bytes() if path.is_file() else None
        if data is not None and sha256(data) == digest:
            self.files[relative] = _entry(data)
        elif before is None:
            self.files.pop(relative, None)
        else:
            self.files[relative] = before
        try:
            self._write_manifest()
        except PearlError:
            pass

    def settle(self) -> None:
        """Bring every entry that still announces a ``next`` digest in line with its file: the
        digest the file has (and its size), or no entry for a file that was never written.
        Entries whose file matches neither digest are left for :meth:`verify` to report. Call
        it only while holding the run's write lock.

        Raises:
            PearlError: the manifest cannot be written.
        """
        changed = False
        for relative, entry in list(self.files.items()):
            if "next" not in entry:
                continue
            path = self.root / relative
            if not path.is_file():
                if "sha256" not in entry:
                    del self.files[relative]
                    changed = True
                continue
            kept = _entry(path.read_bytes())
            if kept["sha256"] in self.listed_sha256(relative):
                self.files[relative] = kept
                changed = True
        if changed:
            self._write_manifest()

    def adopt(self, relative: str) -> None:
        """Enter ``root/relative`` as it is on disk into the manifest: only for a file whose
        content was checked another way (a ``progress.json`` with its own checksum). Write lock held.

        Raises:
            PearlError: the manifest cannot be written.
        """
        self.files[relative] = _entry((self.root / relative).read_bytes())
        self._write_manifest()

    def clear(self) -> None:
        """Delete every file the manifest lists and empty it: what a start killed before its
        ``config.yaml`` left (:func:`~pearl_cl.engine.runner.check_new`). Write lock held.

        Raises:
            PearlError: the manifest cannot be written.
        """
        for relative in list(self.files):
            self.delete(relative)

    def _put(self, path: Path, data: bytes) -> None:
        atomic_write_bytes(path, data)

    def _write_manifest(self) -> None:
        body = json.dumps({"files": dict(sorted(self.files.items()))}, indent=2).encode()
        try:
            atomic_write_bytes(self.root / MANIFEST, body)
        except OSError as exc:
            raise write_failure(self.root / MANIFEST, exc, self.root) from exc

    def write_text(self, relative: str, text: str) -> Path:
        """Write UTF-8 ``text`` (see :meth:`write_bytes`)."""
        return self.write_bytes(relative, text.encode("utf-8"))

    def write_json(self, relative: str, obj: Any) -> Path:
        """Write ``obj`` as indented JSON (see :meth:`write_bytes`)."""
        return self.write_text(relative, json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def write_csv(self, relative: str, header: list[str], rows: Iterable[Iterable[Any]]) -> Path:
        """Write a CSV with ``header`` and ``rows`` (see :meth:`write_bytes`)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return self.write_text(relative, buffer.getvalue())

    def write_tensors(self, relative: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
        """Write ``tensors`` as a safetensors file (see :meth:`write_bytes`)."""
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        return self.write_bytes(relative, save_safetensors(contiguous, metadata=metadata))

    def delete(self, relative: str) -> None:
        """Remove ``root/relative`` from the manifest (written first), then from disk.

        Raises:
            PearlError: the manifest cannot be written (names the fix).
        """
        if relative in self.files:
            del self.files[relative]
            self._write_manifest()
        self._unlink(self.root / relative)

    def _unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def read_tensors(self, relative: str) -> dict[str, torch.Tensor]:
        """Read a safetensors file after checking its checksum against the manifest.

        Raises:
            PearlError: the file is missing, not in the manifest, or its checksum differs.
        """
        return load_safetensors(self.read_verified(relative))

    def read_verified(self, relative: str) -> bytes:
        """The bytes of ``root/relative`` after checking its SHA-256 against the manifest.

        Raises:
            PearlError: missing file, unknown file, or checksum mismatch (names the file).
        """
        path = self.root / relative
        if relative not in self.files:
            raise PearlError(f"{path} is not listed in {self.root / MANIFEST}; the run directory is incomplete")
        if not path.is_file():
            raise PearlError(f"{path} is missing; the run directory is incomplete")
        data = path.read_bytes()
        if sha256(data) in self.listed_sha256(relative):
            return data
        data = path.read_bytes()  # a writer may have gone on since the manifest was read: the file, then its manifest
        if sha256(data) in _digests(read_manifest(self.root).get(relative)):
            return data
        raise PearlError(f"{path} is corrupt, or its entry in {MANIFEST} is: their SHA-256 differ; restore the run "
                         f"directory from a backup, or roll back to a task before the damaged one")

    def listed_sha256(self, relative: str) -> list[str]:
        """The SHA-256 digests an intact ``relative`` may have: its manifest entry's, and the
        ``next`` one while a write of it is under way (module docstring); none when it is not
        listed."""
        return _digests(self.files.get(relative))

    def verify(self) -> list[str]:
        """Relative paths of every manifest entry whose file is missing or fails its checksum (an
        entry announced for a file never written is not reported)."""
        bad = []
        for relative, entry in self.files.items():
            if "sha256" not in entry and not (self.root / relative).exists():
                continue  # announced, never written: a write that failed or was stopped before its rename
            try:
                self.read_verified(relative)
            except PearlError:
                bad.append(relative)
        return bad


class ReplicaStore(RunStore):
    """The run directory as seen by a process other than process 0 under ``torchrun``
    (:mod:`pearl_cl.learning.distributed`): it writes, records and removes nothing on disk, and reads
    what process 0 wrote, checked against process 0's manifest (re-read for every file).

    Our design: one writer per run directory.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files = read_manifest(self.root)

    def _put(self, path: Path, data: bytes) -> None:
        pass

    def _write_manifest(self) -> None:
        pass

    def _unlink(self, path: Path) -> None:
        pass

    def read_verified(self, relative: str) -> bytes:
        """As :meth:`RunStore.read_verified`, against the manifest process 0 last wrote."""
        self.files = read_manifest(self.root)
        return super().read_verified(relative)


def open_store(root: str | Path, writer: bool) -> RunStore:
    """The run directory at ``root``: a :class:`RunStore` for the writing process, else a
    :class:`ReplicaStore`."""
    return RunStore(root) if writer else ReplicaStore(root)

