"""The syslog sink: RFC 5424, RFC 3164 or syslog(3) format over a unix socket, UDP or TCP."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from bridged.config import SinkConfig
from bridged.log import get_logger
from bridged.sinks.base import LineMeta, SinkError, reason

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
        priority, event_type = (meta.priority, meta.event_type) if meta is not None else (None, None)
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
                raise SinkError(f"cannot send to syslog {self.address}: {reason(exc)}") from exc

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def probe(self) -> str | None:
        """Connect and close: a socket path with no listener, an unresolvable host or a closed TCP port show.

        UDP gives no answer, so a UDP address is only resolved."""
        with self._lock:
            try:
                self._connect()
            except OSError as exc:
                return f"cannot reach syslog {self.address}: {reason(exc)}"
            finally:
                self._close_socket()
        return None

    def reopen(self) -> None:
        self._reconnect_requested = True

    def close(self) -> None:
        with self._lock:
            self._close_socket()
