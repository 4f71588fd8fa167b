"""What every sink is: the protocol, its errors, and how lines reach a descriptor.

A write returns only once the sink took every line, or raises SinkError
saying how many it took (the stdlib handlers swallow their errors, which
would make an ack after a lost write possible). Sinks are shared between
binding threads, so each holds its own lock.
"""

from __future__ import annotations

import os
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


class Sink(Protocol):
    name: str
    wants_meta: bool  # whether write() needs a LineMeta per line (costs a parse per message)

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        """Deliver every line or raise SinkError.

        *batch* is the held batch's identity: the same object when the worker retries it after a
        failure (a sink that spreads lines over several files remembers its progress by it).
        """

    def probe(self) -> str | None:
        """Why a line could not be written now, found without writing one (check --connect); None if it could."""

    def reopen(self) -> None:
        """Reopen files on the next write (SIGHUP, logrotate)."""

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
    """Writes batches of lines to a descriptor and resumes a cut line at the byte.

    A short write (disk full mid-batch) leaves part of a line in the file.
    Writing the whole batch again would leave that cut line plus a copy of
    every line before it; instead the lines fully written count as taken,
    the cut line counts as taken too, and its missing bytes are written first
    on the next attempt.
    """

    def __init__(self) -> None:
        self.rest = b""  # the unwritten end of a cut line, written before anything else

    def write(self, fd: int, lines: Sequence[bytes]) -> None:
        """Write the pending rest, then *lines*; raises OSError with ``taken`` lines counted."""
        if self.rest:
            try:
                _write_all(fd, self.rest)
            except OSError as exc:
                self.rest = self.rest[exc.written :]  # type: ignore[attr-defined]
                exc.taken = 0  # type: ignore[attr-defined]
                raise
            self.rest = b""
        data = b"\n".join([*lines, b""])  # the last line's newline without copying the batch twice
        try:
            _write_all(fd, data)
        except OSError as exc:
            written: int = exc.written  # type: ignore[attr-defined]
            taken = data.count(b"\n", 0, written)
            if written and data[written - 1 : written] != b"\n":
                end = data.index(b"\n", written) + 1
                self.rest = data[written:end]
                taken += 1
            exc.taken = taken  # type: ignore[attr-defined]
            raise


def probe_path(path: str) -> str | None:
    """Why this user could not append to (or create, with its directories) a file at *path*; None if it could."""
    if os.path.exists(path):
        if not os.path.isfile(path):
            return f"{path} is not a regular file"
        return None if os.access(path, os.W_OK) else f"{path} is not writable by this user"
    return probe_directory(os.path.dirname(os.path.abspath(path)), f"cannot create {path}")


def probe_directory(directory: str, doing: str = "cannot create files") -> str | None:
    """Why files could not be created in *directory* (made with its parents if missing); None if they could."""
    while not os.path.exists(directory):  # the sinks create missing directories: the first existing one decides
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        return f"{doing}: {directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{doing}: {directory} is not writable by this user"
    return None
