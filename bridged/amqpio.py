"""py-amqp beyond its public API, in one place: the fast read path and tolerant property decoding.

Each use is checked against the installed py-amqp (names, and behaviour
where a name is not enough), with a fallback when it does not fit: the
public ``drain_events()`` for reads, py-amqp untouched for properties.
tests/integration/test_hot_path.py fails loudly, naming what changed.

py-amqp reads exactly the bytes it needs, one recv(2) per frame part (about
six per message), and ``drain_events(timeout=…)`` flips the socket between
blocking and timeout mode around every call (more syscalls, and in timeout
mode CPython polls before every recv). Here the socket stays blocking (its
SO_RCVTIMEO, set from the I/O timeout, bounds a stalled read), we poll(2)
only when py-amqp's read buffer is empty, and each recv may bring up to
READ_CHUNK bytes: py-amqp keeps the surplus in its read buffer, so one recv
serves several small messages.
"""

from __future__ import annotations

import os
import select
import ssl
import struct
from collections.abc import Callable
from typing import Any

# Bytes asked of each recv(2). Measured with bench/throughput.py: larger
# chunks save syscalls but py-amqp copies the surplus on every frame read,
# so past a few KiB the copies cost more than the syscalls saved.
READ_CHUNK = 4096


# What the fast path uses of py-amqp beyond its public API (tests/integration/test_hot_path.py
# fails loudly if a py-amqp release changes them; bridged then reads through drain_events()).
TRANSPORT_INTERNALS = ("_quick_recv", "_read_buffer", "read_frame", "sock")
CONNECTION_INTERNALS = ("on_inbound_frame",)
# BRIDGED_AMQP_FAST_PATH=0 reads through py-amqp's public drain_events() instead: a diagnostic,
# and the speed of the fallback (bench/throughput.py --plain-reads measures it).
FAST_PATH_ENV = "BRIDGED_AMQP_FAST_PATH"

FrameReader = Callable[[Any, float], None]


def fast_path_fits(connection: Any) -> bool:
    """Whether this py-amqp connection has the internals the fast path relies on."""
    transport = connection.transport
    return all(hasattr(transport, name) for name in TRANSPORT_INTERNALS) and all(
        hasattr(connection, name) for name in CONNECTION_INTERNALS
    )


def frame_reader(connection: Any) -> tuple[FrameReader, bool]:
    """The fastest way to read this connection's frames, and whether it is the fast path.

    The returned reader waits up to its timeout for a frame, dispatches what
    arrived (deliveries reach the channel callback) and may raise TimeoutError.
    """
    if os.environ.get(FAST_PATH_ENV, "1") != "0" and fast_path_fits(connection):
        enable_read_ahead(connection.transport)
        return FrameWaiter(connection.transport).read_frames, True
    return _drain_events, False


def _drain_events(connection: Any, timeout: float) -> None:
    """py-amqp's public way: one method's frames within *timeout*, else TimeoutError."""
    connection.drain_events(timeout=max(timeout, 0.0))


def enable_read_ahead(transport: Any) -> bool:
    """Let py-amqp's transport read up to READ_CHUNK bytes per recv; False if its internals differ."""
    recv = getattr(transport, "_quick_recv", None)
    if recv is None or not hasattr(transport, "_read_buffer"):
        return False

    def read_ahead(size: int) -> bytes:
        try:
            return recv(size if size > READ_CHUNK else READ_CHUNK)  # type: ignore[no-any-return]
        except (BlockingIOError, ssl.SSLWantReadError):
            # SO_RCVTIMEO expired mid-frame: py-amqp would retry forever; a
            # timeout makes it keep the partial frame and return to our loop.
            raise TimeoutError("no data from the broker within the I/O timeout") from None

    transport._quick_recv = read_ahead
    return True


class FrameWaiter:
    """Waits for the next frame on a blocking socket, never changing its timeout mode."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._sock = transport.sock
        self._tls = isinstance(self._sock, ssl.SSLSocket)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN | select.POLLPRI)

    def wait(self, timeout: float) -> bool:
        """True when bytes are ready (buffered or on the socket); False after *timeout* seconds."""
        if self._transport._read_buffer or (self._tls and self._sock.pending()):
            return True
        return bool(self._poll.poll(max(0, int(timeout * 1000))))

    def read_frames(self, connection: Any, timeout: float) -> None:
        """Read and dispatch frames while bytes are at hand, until one completes a method.

        Unlike ``drain_events()``, never waits for a frame that has not started
        to arrive: a lone heartbeat frame must not park the thread until the
        next one (we would stop sending ours, and the broker would hang up).
        """
        if not self.wait(timeout):
            return
        # blocking_read() minus its per-frame having_timeout() context manager
        # (3 frames a message; the socket's timeout mode never changes here).
        read_frame = self._transport.read_frame
        dispatch = connection.on_inbound_frame
        while not dispatch(read_frame()):
            if not self.wait(0):
                return


def tolerate_undecodable_properties() -> bool:
    """Let a delivery whose AMQP properties py-amqp cannot decode reach our callback anyway.

    py-amqp decodes the content header (timestamps, header tables, short
    strings) before any callback runs: a timestamp past year 9999, tables
    nested thousands deep or invalid UTF-8 raise inside frame handling, the
    connection drops, and the broker redelivers the same message forever. Here
    the properties of such a message become empty and ``undecodable`` says why;
    the body and the delivery (tag, routing key) are read as usual, so the
    message is written and acked like any other.

    The patch is checked for behaviour, not just for names: a content header
    with invalid UTF-8 must come out marked and a good one as it was. False
    (and py-amqp left as it was) if this py-amqp does not behave so.
    """
    from amqp.serialization import GenericContent

    original = getattr(GenericContent, "_load_properties", None)
    if original is None:
        return False
    if getattr(original, "tolerant", False):
        return True

    def load_properties(self: Any, class_id: int, buf: Any, offset: int) -> int:
        try:
            return original(self, class_id, buf, offset)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - any decoding failure; the body still follows
            self.properties = {}
            self.undecodable = f"{type(exc).__name__}: {exc}"[:200]
            return offset

    load_properties.tolerant = True  # type: ignore[attr-defined]
    GenericContent.undecodable = None
    GenericContent._load_properties = load_properties
    if _tolerates_bad_properties():
        return True
    GenericContent._load_properties = original  # not the py-amqp we know: leave it alone
    del GenericContent.undecodable
    return False


# basic.properties with only content_type set (flag bit 15): a good one, and one that is not UTF-8.
_GOOD_HEADER = struct.pack(">HB", 0x8000, 16) + b"application/json"
_BAD_HEADER = struct.pack(">HB", 0x8000, 2) + b"\xff\xfe"
_BASIC_CLASS = 60


def _tolerates_bad_properties() -> bool:
    """Whether the patched loader marks an undecodable header and decodes a good one as before."""
    from amqp.basic_message import Message

    try:
        good, bad = Message(), Message()
        good._load_properties(_BASIC_CLASS, _GOOD_HEADER, 0)
        bad._load_properties(_BASIC_CLASS, _BAD_HEADER, 0)
    except Exception:  # noqa: BLE001 - whatever this py-amqp does instead, the patch does not fit it
        return False
    return (
        good.properties == {"content_type": "application/json"}
        and good.undecodable is None
        and bad.properties == {}
        and isinstance(bad.undecodable, str)
    )
