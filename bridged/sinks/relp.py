"""The RELP sink: syslog messages to rsyslog's imrelp, each answered by the server before the batch counts as taken.

RELP (rsyslog's Reliable Event Logging Protocol, doc/relp.md in librelp)
frames each command as ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``; the
server answers every one with ``rsp`` and the same TXNR, in order. A
batch returns only when every frame got ``200``; when the connection is
lost first, the lines already answered count as taken and the rest are
sent again on the next connection: at least once, and the resends are
counted. No maintained Python RELP client exists (pyrelp is Python 2,
librelp's own API hides per-message answers), so this is a small client
written from the protocol description and tested against rsyslog.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bridged import __version__
from bridged import configkit as ck
from bridged.configkit import TLSConfig
from bridged.log import get_logger
from bridged.sinks.base import LineMeta, SinkError
from bridged.sinks.registry import register
from bridged.sinks.syslogmsg import SyslogMessages, SyslogSinkConfig, syslog_settings

# rsyslog's imrelp listens here unless told otherwise.
RELP_DEFAULT_PORT = 2514
# RELP frames in flight before waiting for answers: librelp's own default window.
RELP_DEFAULT_WINDOW = 128

# TXNR runs 1..999,999,999 and then starts again at 1 (0 is the server's hints).
MAX_TXNR = 999_999_999
# An answer longer than this is no RELP server of ours: the open response is
# under 200 bytes, a syslog answer 6 (librelp caps frames at 128 KiB).
MAX_ANSWER = 128 * 1024
# The offers bridged sends: librelp and rsyslog speak relp_version 0.
OPEN_OFFERS = f"relp_version=0\nrelp_software=bridged,{__version__},https://github.com/bridged\ncommands=syslog"
_HEADER = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,32}) (\d{1,9})")
_PARTIAL_HEADER = re.compile(rb"\d{1,9}( ([A-Za-z]{1,32}( \d{0,9})?)?)?")
# A header is at most 9 + 1 + 32 + 1 + 9 bytes: more without a complete one is garbage.
MAX_HEADER = 52
# librelp answers each frame as it goes, with Nagle's algorithm on: the last answers
# of a batch wait for our ACK, which Linux delays up to 40 ms when we have nothing to
# send. Quick ACKs (re-armed before each read: the kernel clears them) avoid that wait.
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
# A clean close waits this long for the server's answer before dropping the socket.
CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class RelpSinkConfig(SyslogSinkConfig):
    """A RELP server (rsyslog's imrelp): the syslog message settings, a window, TLS."""

    window: int = RELP_DEFAULT_WINDOW  # frames sent and not yet answered
    tls: TLSConfig | None = None  # None: plain TCP


class RelpError(Exception):
    """The server broke the protocol, refused a command, or said it is closing."""


def parse_frames(buffer: bytearray) -> list[tuple[int, bytes, bytes]]:
    """Take the complete frames off the front of *buffer*: (txnr, command, data) each.

    A partial frame stays in *buffer* for the next read; anything that is not
    a RELP frame raises RelpError (the connection is then dropped, as the
    protocol says). The buffer is cut once per call, not once per frame.
    """
    frames = []
    pos, size = 0, len(buffer)
    match_header = _HEADER.match
    try:
        while pos < size:
            match = match_header(buffer, pos)
            if match is None:
                if size - pos >= MAX_HEADER or not _PARTIAL_HEADER.fullmatch(buffer, pos):
                    raise RelpError(f"not a RELP frame: {bytes(buffer[pos : pos + 60])!r}")
                break  # the start of a header: wait for the rest
            header_end = match.end()
            if header_end == size:
                break  # DATALEN may go on
            txnr, command, length = int(match[1]), bytes(match[2]), int(match[3])
            separator = buffer[header_end]
            if length > MAX_ANSWER:
                raise RelpError(f"a {length}-byte frame from the server is larger than {MAX_ANSWER}")
            if length == 0 and separator == 0x0A:  # `4 rsp 0`: no data, the trailer at once
                frames.append((txnr, command, b""))
                pos = header_end + 1
                continue
            if separator != 0x20 or length == 0:
                raise RelpError(f"malformed RELP header {bytes(buffer[pos : header_end + 1])!r}")
            end = header_end + 1 + length
            if size <= end:
                break
            if buffer[end] != 0x0A:
                raise RelpError(f"RELP frame {txnr} {command.decode()} does not end where its length says")
            frames.append((txnr, command, bytes(buffer[header_end + 1 : end])))
            pos = end + 1
    finally:
        del buffer[:pos]
    return frames


def tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """Verify the chain and the host name unless verify is false; a client certificate if given."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


class RelpSink:
    """Sends each line as a RELP ``syslog`` command, a window of them in flight; returns when all were answered 200."""

    wants_meta = True

    def __init__(self, config: RelpSinkConfig) -> None:
        self.name = config.name
        self.address = config.address
        parts = urlsplit(config.address)
        self._host, self._port = parts.hostname or "", parts.port or 0
        self._config = config
        self._messages = SyslogMessages(config)
        self._tls = tls_context(config.tls) if config.tls is not None else None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._txnr = 0
        self._reconnect_requested = False
        self._log = get_logger(sink=config.name)
        self.progress = 0  # frames answered so far, ever: a slow server that answers is no stuck one

    # -- the Sink protocol -------------------------------------------------------

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        with self._lock:
            try:
                self._ensure_session()
                self._exchange(list(self._messages.messages(lines, meta)))
            except _Progress as exc:
                self._drop()
                unanswered = exc.sent - exc.answered
                if unanswered:
                    hint = "sent again on the next connection: the server may have them twice"
                    self._log.warning("relp_unanswered", frames=unanswered, hint=hint)
                raise SinkError(f"cannot send to RELP {self.address}: {_why(exc.cause)}", exc.answered,
                                unanswered) from exc  # fmt: skip
            except (OSError, RelpError) as exc:
                self._drop()
                raise SinkError(f"cannot send to RELP {self.address}: {_why(exc)}") from exc

    def probe(self) -> str | None:
        """Connect, open a session and close it: the port, TLS and the server's offers are all checked."""
        with self._lock:
            try:
                self._ensure_session()
                self._close_session()
            except (OSError, RelpError) as exc:
                self._drop()
                return f"cannot open a RELP session with {self.address}: {_why(exc)}"
        return None

    def reopen(self) -> None:
        self._reconnect_requested = True

    def abort(self) -> None:
        """A batch waiting on a slow server: shut the socket down under it (the write raises, nothing is acked)."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.abort()  # a write in progress gives up at once, so the lock is free soon
        with self._lock:
            self._close_quietly()

    # -- the session ---------------------------------------------------------------

    def _ensure_session(self) -> None:
        """An open session: the current one if the server has not closed it, else a new one."""
        if self._reconnect_requested:
            self._reconnect_requested = False
            self._close_quietly()
        if self._sock is not None and not self._server_left():
            return
        self._drop()
        sock = socket.create_connection((self._host, self._port), timeout=self._config.timeout)
        # Frames go out as the window frees up, often a few at a time: Nagle's algorithm would hold
        # each small send for the server's delayed ACK (40 ms) and cap a batch at a few per 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self._tls is not None:
                hostname = self._config.tls.server_hostname if self._config.tls is not None else None
                sock = self._tls.wrap_socket(sock, server_hostname=hostname or self._host)
        except (OSError, ssl.SSLError):
            sock.close()
            raise
        self._sock, self._txnr = sock, 0
        self._buffer.clear()
        offers = OPEN_OFFERS.encode()
        txnr = self._send_command(b"open", offers)
        data = self._answer(txnr)
        commands = next((line[9:] for line in data.split(b"\n") if line.startswith(b"commands=")), b"")
        if b"syslog" not in commands.split(b","):
            raise RelpError(f"the server does not offer the syslog command (it answered {data[:100]!r})")

    def _close_quietly(self) -> None:
        try:
            self._close_session()
        except (OSError, RelpError):
            self._drop()

    def _close_session(self) -> None:
        """RELP close: the server answers, then both sides close the connection."""
        if self._sock is None:
            return
        self._sock.settimeout(min(CLOSE_TIMEOUT, self._config.timeout))
        self._answer(self._send_command(b"close", b""), empty_ok=True)
        self._drop()

    def _server_left(self) -> bool:
        """Before a batch: did the server close the session (a serverclose hint, EOF, an error)?

        Checked without blocking, so a restarted rsyslog is noticed before we
        write into a connection it no longer reads.
        """
        assert self._sock is not None
        try:
            while select.select([self._sock], [], [], 0)[0]:
                data = self._sock.recv(65536)
                if not data:
                    return True
                self._buffer += data
                for txnr, command, _ in parse_frames(self._buffer):
                    if txnr == 0 and command == b"serverclose":
                        return True
                    raise RelpError(f"unexpected {command.decode()} {txnr} from the server while idle")
        except (OSError, RelpError):
            return True
        return False

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._buffer.clear()

    # -- frames ----------------------------------------------------------------------

    def _next_txnr(self) -> int:
        self._txnr = self._txnr % MAX_TXNR + 1
        return self._txnr

    def _send_command(self, command: bytes, data: bytes) -> int:
        assert self._sock is not None
        txnr = self._next_txnr()
        self._sock.sendall(b"%d %s %d %s\n" % (txnr, command, len(data), data) if data else
                           b"%d %s 0\n" % (txnr, command))  # fmt: skip
        return txnr

    def _answer(self, txnr: int, empty_ok: bool = False) -> bytes:
        """Wait for the answer to *txnr* (the only command in flight); its data after a 200 status."""
        deadline = time.monotonic() + self._config.timeout
        while True:
            for got, command, data in self._read_frames(deadline):
                self._check_answer(got, command, data, txnr, empty_ok)
                return data
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no answer to RELP command {txnr} within {self._config.timeout:g} s")

    @staticmethod
    def _check_answer(txnr: int, command: bytes, data: bytes, expected: int, empty_ok: bool = False) -> None:
        """An answer must be `rsp` to the oldest command in flight, with status 200 (close: may be empty)."""
        if txnr == 0 and command == b"serverclose":
            raise RelpError("the server closed the session (serverclose)")
        if command != b"rsp" or txnr != expected:
            raise RelpError(f"expected the answer to {expected}, got {command.decode()} {txnr}")
        if not (empty_ok and not data) and not data.startswith(b"200"):
            raise RelpError(f"the server refused frame {txnr}: {data[:120].decode('utf-8', 'replace')}")

    def _exchange(self, messages: list[bytes]) -> tuple[int, int]:
        """Send every message, at most `window` unanswered at a time; (answered, sent) when all are answered."""
        assert self._sock is not None
        sock = self._sock
        sock.settimeout(self._config.timeout)
        window = self._config.window
        in_flight: deque[int] = deque()
        answered = sent = 0
        total = len(messages)
        while answered < total:
            if sent < total and len(in_flight) < window:
                frames = []
                while sent < total and len(in_flight) < window:
                    txnr = self._next_txnr()
                    message = messages[sent]
                    frames.append(b"%d syslog %d %s\n" % (txnr, len(message), message))
                    in_flight.append(txnr)
                    sent += 1
                try:
                    sock.sendall(b"".join(frames))
                except OSError as exc:
                    raise _Progress(answered, sent, exc) from exc
            deadline = time.monotonic() + self._config.timeout
            try:
                frames_in = self._read_frames(deadline)
            except (OSError, RelpError) as exc:
                raise _Progress(answered, sent, exc) from exc
            if not frames_in:
                raise _Progress(answered, sent, TimeoutError(
                    f"no answer from the server within {self._config.timeout:g} s"))  # fmt: skip
            for txnr, command, data in frames_in:
                try:
                    self._check_answer(txnr, command, data, in_flight[0] if in_flight else -1)
                except RelpError as exc:
                    raise _Progress(answered, sent, exc) from exc
                in_flight.popleft()
                answered += 1
                self.progress += 1
        return answered, sent

    def _read_frames(self, deadline: float) -> list[tuple[int, bytes, bytes]]:
        """The frames that are complete once something arrived (or none by *deadline*); EOF raises."""
        assert self._sock is not None
        while True:
            frames = parse_frames(self._buffer)
            if frames:
                return frames
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            self._sock.settimeout(remaining)
            if QUICKACK is not None:
                self._sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                return []
            if not data:
                raise RelpError("the server closed the connection")
            self._buffer += data


class _Progress(Exception):
    """A failure mid-batch, with how far the batch got."""

    def __init__(self, answered: int, sent: int, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.answered, self.sent, self.cause = answered, sent, cause


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _relp_address(value: Any, where: str) -> str:
    """tcp://host[:port] (port 2514 by default), normalised to carry its port."""
    address = ck.name(value, where)
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as exc:
        raise ck.ConfigError(where, f"malformed RELP address {address!r}: {exc}") from None
    if parts.scheme != "tcp" or not parts.hostname or port == 0 or parts.path not in ("", "/"):
        raise ck.ConfigError(where, f"{address!r} is not tcp://host or tcp://host:port")
    return f"tcp://{parts.netloc}" if port else f"tcp://{parts.netloc}:{RELP_DEFAULT_PORT}"


def parse_config(name: str, section: ck.Section) -> RelpSinkConfig:
    """`type: relp`: tcp://host[:port], the message settings, window and TLS."""
    return RelpSinkConfig(
        name, "relp", address=section.get("address", _relp_address),
        **syslog_settings(section, ("rfc5424", "rfc3164"), "rfc5424"),
        window=section.get("window", ck.integer(1, 10_000), RELP_DEFAULT_WINDOW),
        tls=ck.tls_settings(section.section("tls")) if "tls" in section.raw else None,
    )  # fmt: skip


register("relp", parse_config, RelpSink)
