"""What every sink is: the protocol, its errors, and how lines reach a descriptor.

A write returns only once the sink took every line, or raises SinkError
saying how many it took (the stdlib handlers swallow their errors, which
would make an ack after a lost write possible). Sinks are shared between
binding threads, so each holds its own lock.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridged.formats.notification import LineMeta as LineMeta  # per line, for sinks that want it (wants_meta)


@dataclass(frozen=True)
class SinkConfig:
    """What every sink's settings have; each sink module adds its own fields in a subclass."""

    name: str
    type: str
    format: str | None = None  # this sink's own format; None: each binding's


class SinkError(Exception):
    """A sink could not take a whole batch; nothing of it may be acked.

    *taken* lines (from the start of what it was given) are in: the caller
    gives it only the rest next time, so no line is written twice.
    *unconfirmed* lines after those were sent but not confirmed (RELP, a lost
    connection): they are sent again, so the far end may have them twice.
    """

    def __init__(self, message: str, taken: int = 0, unconfirmed: int = 0) -> None:
        super().__init__(message)
        self.taken = taken
        self.unconfirmed = unconfirmed


class SinkClosed(SinkError):
    """The sink will never take a line again (stdout's reader went away)."""


class SinkDone(SinkClosed):
    """A tool's output has what it wanted and took none of these lines: they stay unsettled, and bridged
    stops with exit 0 (`bridged tail --consume --count N`: nothing is taken that was not printed)."""


class Sink(Protocol):
    name: str
    wants_meta: bool  # whether write() needs a LineMeta per line (costs a parse per message)
    # Counts what a slow write has got done so far (RELP: frames answered): while it moves, a long write is
    # slow, not stuck. Sinks whose writes are one system call leave it at 0.
    progress: int

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        """Deliver every line or raise SinkError.

        *batch* is the held batch's identity: the same object when the worker retries it after a
        failure (a sink that spreads lines over several files remembers its progress by it).
        """

    def probe(self) -> str | None:
        """Why a line could not be written now, found without writing one (check --connect); None if it could."""

    def reopen(self) -> None:
        """Reopen files on the next write (SIGHUP, logrotate)."""

    def abort(self) -> None:
        """Make a write in progress on another thread give up soon (stopping): it raises SinkError.

        Safe from any thread, never blocks. A sink whose writes cannot hang (files) does nothing.
        """

    def close(self) -> None:
        """Release descriptors and sockets."""


def reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _write_all(fd: int, data: bytes) -> int:
    """os.write until all of *data* is out; returns bytes written before an error."""
    view = memoryview(data)
    written = 0
    try:
        while written < len(data):
            written += os.write(fd, view[written:])
    except OSError as exc:
        exc.written = written  # type: ignore[attr-defined]
        raise
    return written


class LineWriter:
    """Writes batches of lines to a descriptor so that it only ever ends with whole lines.

    A short write (disk full mid-batch) leaves part of a line behind. In a
    regular file that part is cut off again at once (ftruncate back to the
    end of the last whole line, which needs no free space): the lines written
    whole count as taken, and the cut one is given again and written whole,
    into whatever file the path names by then, so a reopen after logrotate or
    a stop never leaves half a line anywhere. Where the part cannot be cut
    off (a pipe such as stdout, or ftruncate failed) its missing bytes are
    kept and written first on the next attempt (``rest``), and the cut line
    counts as taken; should its descriptor go first, the whole line goes to
    the next one (finish()).
    """

    def __init__(self) -> None:
        self.rest = b""  # bytes owed before anything else: the end of a cut line, or a newline (opened())
        self._line = b""  # the whole cut line whose rest is owed

    def write(self, fd: int, lines: Sequence[bytes]) -> None:
        """Write the pending rest, then *lines*; raises OSError with ``taken`` lines counted."""
        if self.rest:
            try:
                _write_all(fd, self.rest)
            except OSError as exc:
                self.rest = self.rest[exc.written :]  # type: ignore[attr-defined]
                exc.taken = 0  # type: ignore[attr-defined]
                raise
            self.rest = self._line = b""
        data = b"\n".join([*lines, b""])  # the last line's newline without copying the batch twice
        try:
            _write_all(fd, data)
        except OSError as exc:
            written: int = exc.written  # type: ignore[attr-defined]
            whole = data.rfind(b"\n", 0, written) + 1  # where the last whole line ends
            taken = data.count(b"\n", 0, whole)
            if written > whole and not _cut_back(fd, data[whole:written]):
                end = data.index(b"\n", written) + 1
                self.rest, self._line = data[written:end], data[whole:end]
                taken += 1
            exc.taken = taken  # type: ignore[attr-defined]
            raise

    def opened(self, fd: int) -> None:
        """A file just opened for appending: if it does not end with a newline (a line cut by a crash, or by
        another writer), one is written first, so nothing is ever glued to that head."""
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
                self.rest = b"\n" + self.rest
        except OSError:
            pass

    def finish(self, fd: int) -> None:
        """*fd* is about to be closed or replaced: write what is owed to it, else owe the whole cut line to
        the next descriptor (the head stays behind in this one, cut off by nothing else)."""
        if not self.rest:
            return
        try:
            _write_all(fd, self.rest)
            self.rest = self._line = b""
        except OSError:
            self.rest = self._line if self._line else b""


def _cut_back(fd: int, part: bytes) -> bool:
    """Remove *part*, the head of a cut line, from the end of the regular file *fd*; False where it cannot be."""
    try:
        info = os.fstat(fd)
        end = info.st_size
        if not stat.S_ISREG(info.st_mode) or end < len(part) or os.pread(fd, len(part), end - len(part)) != part:
            return False  # not a file, or its end is not ours (someone else wrote after us)
        os.ftruncate(fd, end - len(part))
    except OSError:
        return False
    return True


def probe_path(path: str) -> str | None:
    """Why this user could not append to (or create, with its directories) a file at *path*; None if it could."""
    if os.path.islink(path):
        return f"{path} is a symbolic link (bridged never follows one)"
    if os.path.exists(path):
        if not os.path.isfile(path):
            return f"{path} is not a regular file"
        try:  # tried for real (writes nothing): permissions, ACLs, a read-only mount all show
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC))
        except OSError as exc:
            return f"cannot write {path}: {exc.strerror or exc}"
        return None
    return probe_directory(os.path.dirname(os.path.abspath(path)), f"cannot create {path}")


def probe_directory(directory: str, doing: str = "cannot create files") -> str | None:
    """Why files could not be created in *directory* (made with its parents if missing); None if they could.

    Tried for real, not guessed from permissions: a file is created (and removed at once) in the first
    directory of the path that exists, which is where the sink would create its own or its directories.
    """
    while not os.path.exists(directory):  # the sinks create missing directories: the first existing one decides
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        return f"{doing}: {directory} is not a directory"
    try:
        fd, name = tempfile.mkstemp(prefix=".bridged-probe-", dir=directory)
    except OSError as exc:
        return f"{doing}: {directory}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(name)
    return None
