"""A lock file that keeps two sync runs apart and recovers from a dead holder.

``fcntl.flock`` is released by the kernel when the holder dies, so a stale lock (process killed, machine
rebooted) never blocks the next run; the pid written inside is for the operator's message only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from fhir_adapter.errors import LockedError, StateError
from fhir_adapter.output.private import not_regular, open_private


class RunLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if not_regular(self.path):
            raise StateError(f"{self.path}: the sync lock is not a regular file: remove it (no run holds it)")
        try:
            fd = open_private(self.path)  # 0600 (an older 0644 lock file is narrowed), folder 0700
        except OSError as exc:
            raise StateError(f"{self.path}: cannot open the sync lock ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockedError(f"another sync run holds {self.path} (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
