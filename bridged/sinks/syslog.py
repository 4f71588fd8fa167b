"""The syslog sink: RFC 5424, RFC 3164 or syslog(3) format over a unix socket, UDP or TCP."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from bridged import configkit as ck
from bridged.sinks.base import LineMeta, SinkError, reason
from bridged.sinks.registry import register
from bridged.sinks.syslogmsg import SyslogMessages, SyslogSinkConfig, syslog_settings

# local: the syslog(3) format rsyslog's imuxsock and journald parse on /dev/log.
SYSLOG_PROTOCOLS = ("rfc5424", "rfc3164", "local")
# The largest UDP payload over IPv4; unix datagram sockets refuse less than that.
MAX_DATAGRAM = 65507


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


class SyslogSink:
    """RFC 5424, RFC 3164 or local syslog(3) format over a unix datagram socket, UDP, or TCP (octet counting).

    Each line's severity follows its notification's priority (severity_map),
    and its event_type becomes the RFC 5424 MSGID.
    """

    wants_meta = True
    progress = 0

    def __init__(self, config: SyslogSinkConfig) -> None:
        self.name = config.name
        self.address = config.address
        self._config = config
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reconnect_requested = False
        self._stream = config.address.startswith("tcp://")
        self._messages = SyslogMessages(config)

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

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        with self._lock:
            try:
                sock = self._connect()
                messages = self._messages.messages(lines, meta)
                if self._stream:  # octet counting (RFC 6587)
                    sock.sendall(b"".join(b"%d %s" % (len(message), message) for message in messages))
                else:
                    for message in messages:
                        sock.send(message)
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

    def abort(self) -> None:
        """A send blocked on a slow server: shut the socket down under it (the writer gets an error)."""
        sock = self._sock
        if sock is not None and self._stream:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.abort()
        with self._lock:
            self._close_socket()


def _syslog_address(value: Any, where: str) -> str:
    address = ck.name(value, where)
    if address.startswith("/"):
        return address
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise ck.ConfigError(where, f"malformed syslog address {address!r}: {exc}") from None
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or not port:
        raise ck.ConfigError(where, f"{address!r} is not a socket path, udp://host:port or tcp://host:port")
    return address


def parse_config(name: str, section: ck.Section) -> SyslogSinkConfig:
    """`type: syslog`: a unix socket path, udp://host:port or tcp://host:port, and the message settings."""
    address = section.get("address", _syslog_address, "/dev/log")
    # A local socket speaks syslog(3)'s format (imuxsock and journald mis-parse RFC 5424 there).
    default_protocol = "local" if address.startswith("/") else "rfc5424"
    config = SyslogSinkConfig(name, "syslog", address=address,
                              **syslog_settings(section, SYSLOG_PROTOCOLS, default_protocol))  # fmt: skip
    if not address.startswith("tcp://") and config.max_size > MAX_DATAGRAM:
        raise ck.ConfigError(
            ck.join(section.path, "max_size"),
            f"must be at most {MAX_DATAGRAM} for a datagram address (a larger datagram is refused, not truncated)",
        )
    return config


register("syslog", parse_config, SyslogSink)
