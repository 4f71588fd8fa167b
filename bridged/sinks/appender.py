"""One log file appended to: follows renames and deletions by inode, reopens on HUP (a file sink's core)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from bridged.sinks.base import LineMeta, LineWriter, SinkError, probe_path, reason

# New log files: owner writes, group (e.g. adm) reads, others nothing.
FILE_MODE = 0o640
DIR_MODE = 0o750
# How long lines keep going to a log file renamed under us (no new file, no HUP)
# before the path is created again.
RENAMED_FILE_GRACE = 2.0


class FileSink:
    """Appends lines to a file; follows renames and deletions by inode, reopens on HUP."""

    wants_meta = False

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._reopen_requested = False
        self._writer = LineWriter()
        self._missing_since: float | None = None

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        with self._lock:
            try:
                self._writer.write(self._descriptor(), lines)
            except OSError as exc:
                self._close_fd()
                raise SinkError(f"cannot write {self.path}: {reason(exc)}", getattr(exc, "taken", 0)) from exc

    def _descriptor(self) -> int:
        """The open descriptor, reopened when asked or when the path now names another file."""
        if self._fd is not None and not self._reopen_requested:
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                stat = None
            if stat is not None and (stat.st_dev, stat.st_ino) == self._identity:
                return self._fd
            if stat is None and os.fstat(self._fd).st_nlink > 0:
                # Renamed away but still on disk: logrotate creates the new file
                # and sends HUP within moments, so keep appending to the renamed
                # file for a grace period rather than race its `create`.
                now = time.monotonic()
                if self._missing_since is None:
                    self._missing_since = now
                if now - self._missing_since < RENAMED_FILE_GRACE:
                    return self._fd
        self._close_fd()
        self._reopen_requested = False
        self._missing_since = None
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        stat = os.fstat(fd)
        self._fd, self._identity = fd, (stat.st_dev, stat.st_ino)
        return fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def holds_cut_line(self) -> bool:
        """Part of a line is in the file and its rest waits here for the next write."""
        return bool(self._writer.rest)

    def probe(self) -> str | None:
        return probe_path(self.path)

    def reopen(self) -> None:
        self._reopen_requested = True

    def close(self) -> None:
        with self._lock:
            self._close_fd()
