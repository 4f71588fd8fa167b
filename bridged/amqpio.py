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

Most of a consumer's time went into py-amqp's frame machinery (three
frames, a Message object and a chain of calls per delivery): DeliveryReader
parses a basic.deliver on the consuming channel here, in one pass over the
bytes at hand, when its method, header and single body frame are all in the
buffer. Anything else (other methods, heartbeats, a message split across
several body frames or not yet whole) goes frame by frame to py-amqp's own
handler, which keeps its own state: both read one shared buffer, so py-amqp's
synchronous calls (declares on the side channel) find every byte.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
from collections.abc import Callable, Mapping
from typing import Any

from amqp import serialization as _serialization
from amqp.exceptions import UnexpectedFrame

from bridged.delivery import Delivery

# py-amqp's own decoder of basic properties, for DeliveryReader: without it the reader stays off.
decode_properties_basic: Callable[[Any, int], tuple[dict[str, Any], int]] | None = getattr(
    _serialization, "decode_properties_basic", None
)

# Bytes asked of each recv(2). Measured with bench/throughput.py: larger
# chunks save syscalls but py-amqp copies the surplus on every frame read,
# so past a few KiB the copies cost more than the syscalls saved.
READ_CHUNK = 4096
# Bytes DeliveryReader asks of each recv(2): it slices deliveries out of its buffer by offset
# (no copy per frame), so a large read costs nothing more and saves syscalls.
DELIVERY_CHUNK = 65536


# What the fast path uses of py-amqp beyond its public API (tests/integration/test_hot_path.py
# fails loudly if a py-amqp release changes them; bridged then reads through drain_events()).
TRANSPORT_INTERNALS = ("_quick_recv", "_read_buffer", "read_frame", "sock")
CONNECTION_INTERNALS = ("on_inbound_frame", "bytes_recv")
# BRIDGED_AMQP_FAST_PATH=0 reads through py-amqp's public drain_events() instead: a diagnostic,
# and the speed of the fallback (bench/throughput.py --plain-reads measures it).
FAST_PATH_ENV = "BRIDGED_AMQP_FAST_PATH"

FrameReader = Callable[[Any, float], None]
# A delivery parsed by DeliveryReader -> whether the caller wants more in this read. Its properties
# are empty and its error says why when py-amqp could not decode them.
OnDelivery = Callable[[Delivery], bool]


def fast_path_fits(connection: Any) -> bool:
    """Whether this py-amqp connection has the internals the fast path relies on."""
    transport = connection.transport
    return all(hasattr(transport, name) for name in TRANSPORT_INTERNALS) and all(
        hasattr(connection, name) for name in CONNECTION_INTERNALS
    )


def frame_reader(connection: Any, channel_id: int | None = None,
                 on_delivery: OnDelivery | None = None) -> tuple[FrameReader, bool]:  # fmt: skip
    """The fastest way to read this connection's frames, and whether it is the fast path.

    The returned reader waits up to its timeout for a frame, dispatches what
    arrived and may raise TimeoutError. Deliveries reach the channel callback,
    or *on_delivery* for those on *channel_id* that DeliveryReader parses itself.
    """
    if os.environ.get(FAST_PATH_ENV, "1") != "0" and fast_path_fits(connection):
        enable_read_ahead(connection.transport)
        if channel_id is not None and on_delivery is not None and decode_properties_basic is not None:
            return DeliveryReader(connection, channel_id, on_delivery).read_frames, True
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


# Distinct content headers remembered, and the largest remembered (bytes): a header with a
# message id or timestamp differs every time, and a huge header table is not worth keeping.
MAX_CACHED_PROPERTIES = 256
MAX_CACHED_HEADER = 1024
# (exchange, routing key) pairs remembered.
MAX_CACHED_NAMES = 1024

_FRAME = struct.Struct(">BHI")  # type, channel, payload size
_CONTENT_HEADER = struct.Struct(">HxxQ")  # class id, (weight), body size
_TAG_BITS = struct.Struct(">QB")  # delivery-tag, the redelivered bit
_DELIVER = b"\x00\x3c\x00\x3c"  # basic.deliver: class 60, method 60
_FRAME_END = 0xCE
_METHOD, _HEADER, _BODY = 1, 2, 3


class DeliveryReader(FrameWaiter):
    """FrameWaiter that parses the consuming channel's whole deliveries itself, in one pass.

    A basic.deliver whose method, content header and single body frame are
    all in the buffer becomes one *on_delivery* call: no py-amqp Message, no
    frame tuples, no dispatch chain. Every other frame goes to py-amqp's frame
    handler in arrival order (heartbeats, channel and connection methods, a
    delivery whose body spans several frames), so the protocol state stays
    py-amqp's. Properties go through py-amqp's own decoder; a header it cannot
    decode becomes empty properties and a reason, and the message is
    delivered like any other (never a dropped connection and a redelivery loop).
    """

    def __init__(self, connection: Any, channel_id: int, on_delivery: OnDelivery) -> None:
        super().__init__(connection.transport)
        self._connection = connection
        self._channel_id = channel_id
        self._on_delivery = on_delivery
        self._enough = False  # on_delivery said so: back to the caller
        # Decoded properties by their bytes: one publisher sends the same header message after
        # message, so most deliveries share one read-only dict (and the formats' caches hit).
        self._properties: dict[bytes, tuple[Mapping[str, Any], str | None]] = {}
        # Exchange and routing key by their bytes: the formats' caches then meet the same str objects.
        self._names: dict[bytes, tuple[str, str]] = {}

    def read_frames(self, connection: Any, timeout: float) -> None:
        """Parse and dispatch what is at hand, until *on_delivery* has had enough or the bytes run out.

        Never waits for a frame that has not started to arrive (see
        FrameWaiter.read_frames); the rest of a started one is awaited on the
        blocking socket, whose SO_RCVTIMEO raises TimeoutError, the start kept
        in the buffer py-amqp shares.
        """
        if not self.wait(timeout):
            return
        transport = self._transport
        recv = transport._quick_recv
        dispatch = connection.on_inbound_frame
        unpack_frame = _FRAME.unpack_from
        mine = self._channel_id
        buf: bytes = transport._read_buffer
        transport._read_buffer = b""  # ours until the finally below (wait() must not count it)
        pos = 0
        delivered = False
        try:
            while True:
                size = len(buf)
                need = pos + 7
                if need <= size:
                    kind, channel, length = unpack_frame(buf, pos)
                    end = pos + 7 + length  # the frame-end octet
                    need = end + 1
                    if end < size:  # the whole frame is here
                        taken = 0
                        if kind == _METHOD and channel == mine and buf[pos + 7 : pos + 11] == _DELIVER:
                            taken = self._take(buf, pos, end, size)
                            if taken > 0:
                                pos = taken
                                delivered = True
                                if self._enough:
                                    self._enough = False
                                    return
                                continue
                        if taken == 0:  # py-amqp's to handle
                            if buf[end] != _FRAME_END:
                                raise UnexpectedFrame(f"Received frame_end {buf[end]:#04x} while expecting 0xce")
                            payload = buf[pos + 7 : end]
                            pos = end + 1  # before dispatch: a frame that raises is not read twice
                            dispatch((kind, channel, payload))
                            continue
                        need = -taken  # the bytes the delivery's content needs
                if pos < size:  # a frame has started: wait for the rest (SO_RCVTIMEO bounds it)
                    chunk = recv(need - size if need - size > DELIVERY_CHUNK else DELIVERY_CHUNK)
                elif self._tls:  # at a frame boundary: read only what is there
                    if not self.wait(0):
                        return
                    chunk = recv(DELIVERY_CHUNK)
                else:
                    try:
                        chunk = self._sock.recv(DELIVERY_CHUNK, socket.MSG_DONTWAIT)  # one syscall, no poll
                    except BlockingIOError:
                        return
                if not chunk:
                    raise OSError("Server unexpectedly closed connection")
                buf = buf[pos:] + chunk if pos else buf + chunk
                pos = 0
        finally:
            transport._read_buffer = buf[pos:] if pos else buf
            if delivered:
                self._connection.bytes_recv += 1  # heartbeat_tick() sees that the broker is alive

    def _decode_names(self, raw: bytes) -> tuple[str, str]:
        """(exchange, routing key) from their two short strings; remembered, so repeats share one str each."""
        split = raw[0] + 1
        names = (raw[1:split].decode("utf-8", "replace"), raw[split + 1 :].decode("utf-8", "replace"))
        if len(self._names) >= MAX_CACHED_NAMES:
            self._names.clear()  # a routing key per message: bounded, start over
        self._names[raw] = names
        return names

    def _decode_properties(self, raw: bytes) -> tuple[Mapping[str, Any], str | None]:
        """py-amqp's decoding of a basic content header's property list: (properties, None), or ({}, the error)."""
        try:
            decoded: tuple[Mapping[str, Any], str | None] = (decode_properties_basic(raw, 0)[0], None)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - any decoding failure: the message is still delivered
            decoded = ({}, undecodable(exc))
        if len(raw) <= MAX_CACHED_HEADER:
            if len(self._properties) >= MAX_CACHED_PROPERTIES:
                self._properties.clear()  # per-message headers (ids, timestamps): start over, bounded
            self._properties[raw] = decoded
        return decoded

    def _take(self, buf: bytes, pos: int, end: int, size: int) -> int:
        """The basic.deliver whose method frame is buf[pos:end + 1], with its content, to on_delivery.

        Returns where the next frame starts; 0 when py-amqp should handle it
        (no header of this channel next, a body in several frames); minus the
        buffer length needed while its content has not all arrived.
        """
        channel = self._channel_id
        unpack_frame = _FRAME.unpack_from
        kind: int
        on: int
        length: int
        header = end + 1
        if header + 7 > size:
            return -(header + 7)
        kind, on, length = unpack_frame(buf, header)
        if kind != _HEADER or on != channel:
            return 0
        header_end = header + 7 + length
        if header_end >= size:
            return -(header_end + 1)
        body_size: int = _CONTENT_HEADER.unpack_from(buf, header + 7)[1]
        if body_size:
            start = header_end + 1
            if start + 7 > size:
                return -(start + 7)
            kind, on, length = unpack_frame(buf, start)
            if kind != _BODY or on != channel or length != body_size:
                return 0  # a body in several frames: py-amqp joins them
            body_end = start + 7 + length
            if body_end >= size:
                return -(body_end + 1)
            body = buf[start + 7 : body_end]
            after = body_end + 1
        else:
            body_end = header_end
            body, after = b"", header_end + 1
        if buf[end] != _FRAME_END or buf[header_end] != _FRAME_END or buf[body_end] != _FRAME_END:
            raise UnexpectedFrame("Received a frame_end other than 0xce")
        raw = buf[header + 19 : header_end]
        known = self._properties.get(raw)
        if known is None:
            known = self._decode_properties(raw)
        properties, why = known
        # consumer-tag (shortstr), delivery-tag (longlong), redelivered (bit), exchange, routing-key (shortstrs)
        at = pos + 12 + buf[pos + 11]
        tag, bits = _TAG_BITS.unpack_from(buf, at)
        at += 9  # the exchange's length octet
        names_end = at + buf[at] + 1  # the routing key's length octet
        names_end += buf[names_end] + 1
        names = self._names.get(raw_names := buf[at:names_end])
        if names is None:
            names = self._decode_names(raw_names)
        if not self._on_delivery(Delivery(body, names[0], names[1], bits & 1 == 1, tag, properties, why)):
            self._enough = True
        return after


def undecodable(exc: Exception) -> str:
    """Why a delivery's properties are empty: py-amqp could not decode them (the Delivery's error)."""
    return "undecodable AMQP properties: " + f"{type(exc).__name__}: {exc}"[:200]


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
            self.undecodable = undecodable(exc)
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
