"""Every file the adapter writes holds patient data or says who was screened: files are created 0600 and
folders 0700, whatever the umask. One helper for every writer (result JSON, report HTML and CSV, sync
state, manifests, the lock, downloaded exports).

Modes are set explicitly (``fchmod``/``chmod``), not left to the umask: a umask of 0 would otherwise
make a new file world-readable, and one of 0o777 unreadable to its owner. Folders that already exist
are left as they are (``/tmp`` or a site's shared ``out/`` are not ours to change); folders the adapter
creates, parents included, are 0700. A file that exists already is narrowed to 0600 when it is
rewritten or reopened (a state file from an older release).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700


def private_dir(path: Path) -> Path:
    """``path`` as a folder: created (with any missing parents) 0700 when missing, else left alone."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs, not ours
        os.chmod(folder, DIR_MODE)
    return path


def not_regular(path: Path) -> bool:
    """Something is at ``path`` that is not a regular file: a folder, a FIFO (an open would block), a
    device such as ``/dev/zero`` (a read never ends), a link to nowhere (the open would create its target)."""
    return (path.exists() or path.is_symlink()) and not path.is_file()


def open_private(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """``os.open`` that creates the file 0600 (its folder 0700) and narrows an existing one to 0600."""
    private_dir(path.parent)
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    narrow(fd)
    return fd


def narrow(file: int | Path) -> None:
    """Set 0600 on an open descriptor or a path; a file we do not own keeps its mode (we cannot change
    it, and the write that follows fails or succeeds on its own terms)."""
    with contextlib.suppress(PermissionError, FileNotFoundError):
        if isinstance(file, int):
            os.fchmod(file, FILE_MODE)
        else:
            os.chmod(file, FILE_MODE)


@contextlib.contextmanager
def atomic_writer(path: Path, *, newline: str | None = None) -> Iterator[IO[str]]:
    """Write ``path`` through a temporary 0600 file in the same folder, renamed over it at the end (a
    crash never leaves half a file where a reader or a scheduled job would find it)."""
    with _atomic(path) as fd, os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
        yield fh


@contextlib.contextmanager
def atomic_binary_writer(path: Path) -> Iterator[IO[bytes]]:
    with _atomic(path) as fd, os.fdopen(fd, "wb") as fh:
        yield fh


def write_private_text(path: Path, content: str, *, newline: str | None = None) -> None:
    with atomic_writer(path, newline=newline) as fh:
        fh.write(content)


def write_private_bytes(path: Path, content: bytes) -> None:
    with atomic_binary_writer(path) as fh:
        fh.write(content)


def temporary_file(path: Path) -> tuple[int, str]:
    """A 0600 temporary file beside ``path`` (its folder created 0700): (descriptor, name)."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    narrow(fd)
    return fd, tmp


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[int]:
    fd, tmp = temporary_file(path)
    try:
        yield fd
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
