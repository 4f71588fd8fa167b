"""Where lines go: file, stdout, syslog. A write returns only once the sink took it.

Every failure raises SinkError (the stdlib handlers swallow theirs, which
would make an ack after a lost write possible). Sinks are shared between
binding threads, so each holds its own lock.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from bridged.config import SinkConfig

# New log files: owner writes, group (e.g. adm) reads, others nothing.
FILE_MODE = 0o640
DIR_MODE = 0o750
# How long lines keep going to a log file renamed under us (no new file, no HUP)
# before the path is created again.
RENAMED_FILE_GRACE = 2.0


class SinkError(Exception):
    """A sink could not take a batch; nothing of it may be acked."""


class Sink(Protocol):
    name: str

    def write(self, lines: Sequence[bytes]) -> None:
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


class FileSink:
    """Appends lines to a file; follows renames and deletions by inode, reopens on HUP."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._reopen_requested = False
        # A failed write may have left half a line: end it before the next one.
        self._partial_line = False
        self._missing_since: float | None = None

    def write(self, lines: Sequence[bytes]) -> None:
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            try:
                fd = self._descriptor()
                if self._partial_line:
                    data = b"\n" + data
                _write_all(fd, data)
                self._partial_line = False
            except OSError as exc:
                if getattr(exc, "written", 0):
                    self._partial_line = True
                self._close_fd()
                raise SinkError(f"cannot write {self.path}: {_reason(exc)}") from exc

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

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()

    def write(self, lines: Sequence[bytes]) -> None:
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            try:
                _write_all(1, data)
            except OSError as exc:
                raise SinkError(f"cannot write to stdout: {_reason(exc)}") from exc

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


SEVERITY_INFO = 6
TRUNCATION_MARKER = b"...[truncated]"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _still_open(sock: socket.socket) -> bool:
    """A syslog server never sends: anything readable on the stream means EOF or an error.

    Checked before each batch, so a server that closed the connection is seen
    before we write into a dead socket whose first send would still succeed.
    """
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


class SyslogSink:
    """RFC 5424/3164 over a unix datagram socket, UDP, or TCP with octet counting."""

    def __init__(self, config: SinkConfig) -> None:
        self.name = config.name
        self.address = config.address
        self._config = config
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reconnect_requested = False
        self._stream = config.address.startswith("tcp://")
        self._hostname = (socket.gethostname().split(".")[0] or "-").encode("ascii", "replace")
        self._pri = f"<{config.facility * 8 + SEVERITY_INFO}>".encode()
        self._tag = config.tag.encode("ascii")

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

    def _header(self) -> bytes:
        now = time.time()
        pid = str(os.getpid()).encode()
        if self._config.protocol == "rfc3164":
            tm = time.localtime(now)
            stamp = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
            return b"%s%s %s %s[%s]: " % (self._pri, stamp.encode(), self._hostname, self._tag, pid)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        return b"%s1 %s %s %s %s - - " % (self._pri, stamp.encode(), self._hostname, self._tag, pid)

    def frame(self, header: bytes, line: bytes) -> bytes:
        """Header plus line, cut to max_size with a marker rather than dropped."""
        message = header + line
        limit = self._config.max_size
        if len(message) > limit:
            keep = max(0, limit - len(header) - len(TRUNCATION_MARKER))
            body = line[:keep].decode("utf-8", "ignore").encode("utf-8")
            message = header + body + TRUNCATION_MARKER
        if self._stream:
            return b"%d %s" % (len(message), message)
        return message

    def write(self, lines: Sequence[bytes]) -> None:
        with self._lock:
            try:
                sock = self._connect()
                header = self._header()
                if self._stream:
                    sock.sendall(b"".join(self.frame(header, line) for line in lines))
                else:
                    for line in lines:
                        sock.send(self.frame(header, line))
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
