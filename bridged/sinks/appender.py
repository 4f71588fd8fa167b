"""One log file appended to: follows renames and deletions by inode, reopens on HUP (a file sink's core).

With ``fsync``, a write returns only once its lines are on disk: the file
is fdatasync'ed after the batch (one sync per batch, so the cost falls with
the batch size) and its directory fsync'ed after the file was created or
opened anew (a rotation). A failed sync is never retried on the same
descriptor: Linux may have dropped the dirty pages, and a second fsync would
then report success for data that is gone. The descriptor is closed and the
whole batch given again (taken 0): duplicates are possible, loss is not.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from bridged.sinks.base import LineMeta, LineWriter, SinkError, probe_path, reason
from bridged.sinks.beneath import Beneath, make_directories, open_append

# How long lines keep going to a log file renamed under us (no new file, no HUP)
# before the path is created again.
RENAMED_FILE_GRACE = 2.0


class FileSink:
    """Appends lines to a file; follows renames and deletions by inode, reopens on HUP; syncs when asked."""

    wants_meta = False
    progress = 0

    def __init__(self, name: str, path: str, fsync: bool = False, beneath: Beneath | None = None) -> None:
        """*beneath*: the base directory *path* lies under (a path template's): no link below it is followed."""
        self.name = name
        self.path = path
        self.fsync = fsync
        self._beneath = beneath
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._reopen_requested = False
        self._writer = LineWriter()
        self._missing_since: float | None = None
        self._new_entries: list[str] = []  # directories whose entries must be synced (fsync: after an open)

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        with self._lock:
            try:
                fd = self._descriptor()
                self._writer.write(fd, lines)
            except OSError as exc:
                taken = getattr(exc, "taken", 0)
                if taken and self.fsync and not self._synced(fd):
                    taken = 0  # what this descriptor took is not known to be on disk: all of it again
                self._close_fd()
                raise SinkError(f"cannot write {self.path}: {reason(exc)}", taken) from exc
            if self.fsync:
                self._sync(fd)

    def _sync(self, fd: int) -> None:
        """The batch on disk, and the file's name too after an open; or SinkError with nothing taken."""
        try:
            os.fdatasync(fd)
            while self._new_entries:
                _sync_directory(self._new_entries[-1])
                self._new_entries.pop()
        except OSError as exc:
            self._close_fd(finish=False)  # never trust this descriptor's page cache again
            raise SinkError(f"cannot sync {self.path} to disk: {reason(exc)}", 0) from exc

    @staticmethod
    def _synced(fd: int) -> bool:
        try:
            os.fdatasync(fd)
        except OSError:
            return False
        return True

    def _descriptor(self) -> int:
        """The open descriptor, reopened when asked or when the path now names another file."""
        if self._fd is not None and not self._reopen_requested:
            try:
                info = os.stat(self.path, follow_symlinks=False)  # a link swapped in is another file
            except (FileNotFoundError, NotADirectoryError):
                info = None
            if info is not None and (info.st_dev, info.st_ino) == self._identity:
                return self._fd
            if info is None and os.fstat(self._fd).st_nlink > 0:
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
        directory = os.path.dirname(self.path) or "."
        if self._beneath is not None:
            fd, created = self._beneath.open_append(os.path.relpath(self.path, self._beneath.base))
        else:
            created = make_directories(directory)
            fd = open_append(self.path)
        info = os.fstat(fd)
        self._fd, self._identity = fd, (info.st_dev, info.st_ino)
        self._writer.opened(fd)
        if self.fsync:  # the file's entry, and those of the directories just made, must reach the disk too
            entries = [directory, *(os.path.dirname(d) or "." for d in created)]
            self._new_entries = list(dict.fromkeys([*self._new_entries, *entries]))
        return fd

    def _close_fd(self, finish: bool = True) -> None:
        """Close the descriptor; first write what is owed to it (a cut line's end), unless it is not trusted."""
        if self._fd is not None:
            if finish:
                self._writer.finish(self._fd)
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

    def abort(self) -> None:
        pass  # a write to a file is one system call

    def close(self) -> None:
        with self._lock:
            self._close_fd()


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
