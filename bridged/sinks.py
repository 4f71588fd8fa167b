"""Where lines go: file, stdout, syslog. A write returns only once the sink took it.

Every failure raises SinkError (the stdlib handlers swallow theirs, which
would make an ack after a lost write possible). Sinks are shared between
binding threads, so each holds its own lock.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from bridged.config import SinkConfig
from bridged.log import get_logger

# New log files: owner writes, group (e.g. adm) reads, others nothing.
FILE_MODE = 0o640
DIR_MODE = 0o750
# How long lines keep going to a log file renamed under us (no new file, no HUP)
# before the path is created again.
RENAMED_FILE_GRACE = 2.0


class SinkError(Exception):
    """A sink could not take a whole batch; nothing of it may be acked.

    *taken* lines (from the start of what it was given) are in: the caller
    gives it only the rest next time, so no line is written twice.
    """

    def __init__(self, message: str, taken: int = 0) -> None:
        super().__init__(message)
        self.taken = taken


class SinkClosed(SinkError):
    """The sink will never take a line again (stdout's reader went away)."""


# Per line, for sinks that want it: the notification's (priority, event_type).
LineMeta = tuple[str | None, str | None]


class Sink(Protocol):
    name: str
    wants_meta: bool  # whether write() needs a LineMeta per line (costs a parse per message)

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None) -> None:
        """Deliver every line or raise SinkError."""

    def reopen(self) -> None:
        """Reopen files on the next write (SIGHUP, logrotate)."""

    def close(self) -> None:
        """Release descriptors and sockets."""


def _reason(exc: OSError) -> str:
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
        data = b"\n".join(lines) + b"\n"
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

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None) -> None:
        with self._lock:
            try:
                self._writer.write(self._descriptor(), lines)
            except OSError as exc:
                self._close_fd()
                raise SinkError(f"cannot write {self.path}: {_reason(exc)}", getattr(exc, "taken", 0)) from exc

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

    def reopen(self) -> None:
        self._reopen_requested = True

    def close(self) -> None:
        with self._lock:
            self._close_fd()


class StdoutSink:
    """Writes lines to file descriptor 1, unbuffered: a batch is out when write returns."""

    wants_meta = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._writer = LineWriter()

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None) -> None:
        with self._lock:
            try:
                self._writer.write(1, lines)
            except BrokenPipeError as exc:
                # `bridged ... | head`: the reader is gone for good; what is unacked stays queued.
                raise SinkClosed("stdout was closed by its reader", getattr(exc, "taken", 0)) from exc
            except OSError as exc:
                raise SinkError(f"cannot write to stdout: {_reason(exc)}", getattr(exc, "taken", 0)) from exc

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


TRUNCATION_MARKER = b"...[truncated]"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 5424 MSGID: 1-32 printable US-ASCII characters.
MSGID_MAX = 32


def _still_open(sock: socket.socket) -> bool:
    """A syslog server never sends: anything readable on the stream means EOF or an error.

    Checked before each batch, so a server that closed the connection is seen
    before we write into a dead socket whose first send would still succeed.
    poll(2) with timeout 0 first: a recv on a socket with a timeout would wait
    that whole timeout for nothing (CPython polls before it reads).
    """
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    if not poller.poll(0):
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _msgid(event_type: str | None) -> bytes:
    if not event_type:
        return b"-"
    text = "".join(c for c in event_type[:MSGID_MAX] if 33 <= ord(c) <= 126)
    return text.encode("ascii") or b"-"


def truncate_json(line: bytes, limit: int) -> bytes:
    """A JSON object line too long for *limit*, as a smaller JSON object that says so.

    Cutting the text would leave invalid JSON that a log pipeline drops or
    mis-parses; this keeps a valid record with the start of the original.
    """
    skeleton = b'{"bridged_truncated":true,"size":%d,"head":""}' % len(line)
    room = limit - len(skeleton)
    head = line[: max(0, room)].decode("utf-8", "ignore")
    while True:
        encoded = json.dumps(head, ensure_ascii=True).encode("ascii")
        if len(encoded) - 2 <= room or not head:
            break
        head = head[: max(0, len(head) - (len(encoded) - 2 - room) - 1)]
    return skeleton[:-3] + encoded + b"}"


class SyslogSink:
    """RFC 5424, RFC 3164 or local syslog(3) format over a unix datagram socket, UDP, or TCP (octet counting).

    Each line's severity follows its notification's priority (severity_map),
    and its event_type becomes the RFC 5424 MSGID.
    """

    wants_meta = True

    def __init__(self, config: SinkConfig) -> None:
        self.name = config.name
        self.address = config.address
        self._config = config
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reconnect_requested = False
        self._stream = config.address.startswith("tcp://")
        self._hostname = (socket.gethostname().split(".")[0] or "-").encode("ascii", "replace")
        self._pris = [f"<{config.facility * 8 + severity}>".encode() for severity in range(8)]
        self._severity_map = {p.upper(): s for p, s in config.severity_map.items()}
        self._tag = config.tag.encode("ascii")
        self._log = get_logger(sink=config.name)

    def _connect(self) -> socket.socket:
        if self._reconnect_requested:
            self._reconnect_requested = False
            self._close_socket()
        if self._sock is not None:
            if not self._stream or _still_open(self._sock):
                return self._sock
            self._close_socket()
        address = self.address
        if address.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            target: object = address
        else:
            parts = urlsplit(address)
            kind = socket.SOCK_STREAM if self._stream else socket.SOCK_DGRAM
            infos = socket.getaddrinfo(parts.hostname, parts.port, type=kind)
            family, kind, proto, _, target = infos[0]
            sock = socket.socket(family, kind, proto)
        sock.settimeout(self._config.timeout)
        try:
            sock.connect(target)  # type: ignore[arg-type]
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return sock

    def _stamp(self) -> tuple[bytes, bool]:
        """The batch's header middle part (after PRI, before MSGID) and whether MSGID follows."""
        now = time.time()
        pid = str(os.getpid()).encode()
        protocol = self._config.protocol
        if protocol == "rfc5424":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
            return b"1 %s %s %s %s " % (stamp.encode(), self._hostname, self._tag, pid), True
        tm = time.localtime(now)
        stamp = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
        if protocol == "rfc3164":
            return b"%s %s %s[%s]: " % (stamp.encode(), self._hostname, self._tag, pid), False
        return b"%s %s[%s]: " % (stamp.encode(), self._tag, pid), False  # local: no hostname

    def _severity(self, priority: str | None) -> int:
        if priority is None:
            return self._config.severity
        found = self._severity_map.get(priority)
        if found is None:
            found = self._severity_map.get(priority.upper(), self._config.severity)
        return found

    def header(self, middle: bytes, with_msgid: bool, meta: LineMeta | None) -> bytes:
        priority, event_type = meta if meta is not None else (None, None)
        pri = self._pris[self._severity(priority)]
        if with_msgid:
            return b"%s%s%s - " % (pri, middle, _msgid(event_type))
        return pri + middle

    def frame(self, header: bytes, line: bytes) -> bytes:
        """Header plus line, cut to max_size: JSON stays valid JSON, text ends with a marker."""
        message = header + line
        limit = self._config.max_size
        if len(message) > limit:
            room = max(0, limit - len(header))
            if line[:1] == b"{":
                message = header + truncate_json(line, room)
            else:
                keep = max(0, room - len(TRUNCATION_MARKER))
                message = header + line[:keep].decode("utf-8", "ignore").encode("utf-8") + TRUNCATION_MARKER
            self._log.warning("line_truncated", size=len(line), max_size=limit)
        if self._stream:
            return b"%d %s" % (len(message), message)
        return message

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None) -> None:
        with self._lock:
            try:
                sock = self._connect()
                middle, with_msgid = self._stamp()
                header = self.header
                frames = (
                    self.frame(header(middle, with_msgid, meta[i] if meta is not None else None), line)
                    for i, line in enumerate(lines)
                )
                if self._stream:
                    sock.sendall(b"".join(frames))
                else:
                    for frame in frames:
                        sock.send(frame)
            except OSError as exc:
                self._close_socket()
                raise SinkError(f"cannot send to syslog {self.address}: {_reason(exc)}") from exc

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def reopen(self) -> None:
        self._reconnect_requested = True

    def close(self) -> None:
        with self._lock:
            self._close_socket()


def build_sink(config: SinkConfig) -> Sink:
    if config.type == "file":
        assert config.path is not None
        return FileSink(config.name, config.path)
    if config.type == "stdout":
        return StdoutSink(config.name)
    return SyslogSink(config)


def build_sinks(configs: Mapping[str, SinkConfig]) -> dict[str, Sink]:
    """One sink object per declared sink, shared by every binding that names it."""
    return {name: build_sink(config) for name, config in configs.items()}
