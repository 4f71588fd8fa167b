"""amqpio.DeliveryReader against py-amqp's own frame handler: the same deliveries from the same bytes.

No broker: frames are built with py-amqp's serializers and sent over a
socketpair into a real py-amqp TCPTransport, in whatever pieces hypothesis
picks. Whatever the reader parses itself and whatever it hands to py-amqp
(bodies in several frames, other channels, heartbeats) must come out as
py-amqp alone decodes it, in order, and nothing twice.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Any

import pytest
from amqp.basic_message import Message
from amqp.exceptions import UnexpectedFrame
from amqp.method_framing import frame_handler
from amqp.serialization import dumps, loads
from amqp.transport import TCPTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridged.amqpio import MAX_CACHED_NAMES, DeliveryReader, enable_read_ahead
from bridged.delivery import Delivery

CHANNEL, OTHER = 1, 2
FRAME_MAX = 4096  # small, so that bodies span several frames often
DELIVER_ARGS = "sLbss"  # consumer-tag, delivery-tag, redelivered, exchange, routing-key (py-amqp's spec)


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def delivery_frames(tag: int, body: bytes, properties: dict[str, Any], redelivered: bool, routing_key: str,
                    channel: int = CHANNEL, exchange: str = "nova") -> bytes:  # fmt: skip
    """basic.deliver, its content header and its body in frames of at most FRAME_MAX, as a broker sends them."""
    args = dumps(DELIVER_ARGS, ["ctag", tag, redelivered, exchange, routing_key])
    header = struct.pack(">HHQ", 60, 0, len(body)) + Message(**properties)._serialize_properties()
    chunk = FRAME_MAX - 8
    bodies = [frame(3, channel, body[i : i + chunk]) for i in range(0, len(body), chunk)]
    return frame(1, channel, struct.pack(">HH", 60, 60) + args) + frame(2, channel, header) + b"".join(bodies)


HEARTBEAT = frame(8, 0, b"")
FLOW_OK = frame(1, OTHER, struct.pack(">HHB", 20, 21, 1))  # channel.flow-ok on the side channel


class Peer:
    """A py-amqp transport reading one end of a socketpair, a writer thread feeding the other end."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.settimeout(None)  # blocking, with SO_RCVTIMEO bounding a stalled read, as bridged sets it
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
        self.transport = TCPTransport("localhost:1")
        self.transport.sock = self.ours
        self.transport._setup_transport()
        assert enable_read_ahead(self.transport)
        self.bytes_recv = 0
        self.methods: list[tuple[int, tuple[int, int]]] = []  # what py-amqp dispatched besides deliveries
        self.got: list[tuple[Any, ...]] = []
        self.on_inbound_frame = frame_handler(self, self._on_method)

    def _on_method(self, channel: int, method: tuple[int, int], buf: bytes, message: Message | None) -> None:
        """What py-amqp's Connection does with a frame set: a delivery decoded by py-amqp itself."""
        if message is None:
            self.methods.append((channel, method))
            return
        _, tag, redelivered, exchange, routing_key = loads(DELIVER_ARGS, buf, 4)[0]
        self.got.append((bytes(message.body), exchange, routing_key, redelivered, tag, message.properties, None))

    def send(self, data: bytes, pieces: list[int]) -> threading.Thread:
        def write() -> None:
            at = 0
            for size in pieces:
                self.theirs.sendall(data[at : at + size])
                at += size
            self.theirs.sendall(data[at:])

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


def fields(delivery: Delivery) -> tuple[Any, ...]:
    """What the reader parsed, in the order the py-amqp decoding above records it."""
    return (delivery.body, delivery.exchange, delivery.routing_key, delivery.redelivered, delivery.tag,
            delivery.properties, delivery.error)  # fmt: skip


def read_all(peer: Peer, reader: DeliveryReader, count: int) -> None:
    """Read until *count* deliveries came; the writer sends at once, so 10 s with none new is a failure."""
    deadline = time.monotonic() + 10
    while len(peer.got) < count:
        before = len(peer.got)
        try:
            reader.read_frames(peer, 0.2)
        except TimeoutError:
            pass  # a frame stalled midway: its start is kept, the next read goes on
        if len(peer.got) > before:
            deadline = time.monotonic() + 10
        assert time.monotonic() < deadline, f"{len(peer.got)} of {count} deliveries"


messages = st.lists(
    st.tuples(
        # a body's size (empty, one frame, several) and a seed for its bytes: large bodies cost no entropy
        st.tuples(st.one_of(st.integers(0, 200), st.integers(FRAME_MAX - 20, 3 * FRAME_MAX)), st.integers(0, 255)),
        st.fixed_dictionaries(
            {},
            optional={
                "content_type": st.sampled_from(["application/json", "text/plain"]),
                "delivery_mode": st.sampled_from([1, 2]),
                "application_headers": st.dictionaries(
                    st.text(max_size=8), st.integers(-5, 5) | st.text(max_size=8), max_size=3
                ),
                "message_id": st.text(max_size=20),
            },
        ),
        st.booleans(),
        st.text(max_size=30),
        st.sampled_from([None, HEARTBEAT, FLOW_OK]),  # what comes after it
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.lists(st.integers(1, 700), max_size=40), st.integers(1, 7))
def test_the_reader_delivers_what_py_amqp_decodes_in_order_whatever_the_pieces(batch, pieces, room):
    """Any mix of bodies (empty, one frame, several), properties, heartbeats and side-channel methods, sent in
    any pieces: the same deliveries as py-amqp's own decoding, once each, in order, even when the caller
    stops the reader every *room* deliveries."""
    peer = Peer()
    try:
        data, expected, methods = b"", [], []
        for tag, ((size, seed), properties, redelivered, routing_key, after) in enumerate(batch, 1):
            body = random.Random(seed).randbytes(size)
            data += delivery_frames(tag, body, properties, redelivered, routing_key) + (after or b"")
            expected.append((body, "nova", routing_key, redelivered, tag, properties, None))
            if after == FLOW_OK:
                methods.append((OTHER, (20, 21)))

        def on_delivery(delivery: Delivery) -> bool:
            peer.got.append(fields(delivery))
            return len(peer.got) % room != 0

        reader = DeliveryReader(peer, CHANNEL, on_delivery)
        writer = peer.send(data, pieces)
        read_all(peer, reader, len(expected))
        writer.join(10)
        reader.read_frames(peer, 0.05)  # whatever follows the last delivery (a heartbeat, a method)
        assert [g[:5] for g in peer.got] == [e[:5] for e in expected]
        assert [dict(g[5]) for g in peer.got] == [e[5] for e in expected]
        assert peer.methods == methods
        assert peer.transport._read_buffer == b""
        assert peer.bytes_recv > 0
    finally:
        peer.close()


def test_properties_py_amqp_cannot_decode_come_as_a_reason_with_the_message():
    """A content type that is not UTF-8: the body, tag and routing key arrive, the properties empty, the
    reason given (the worker writes the message marked; no dropped connection, no redelivery loop)."""
    peer = Peer()
    try:
        good = delivery_frames(1, b"{}", {"content_type": "application/json"}, False, "k")
        method_frame_len = 7 + struct.unpack(">I", good[3:7])[0] + 1
        bad_header = struct.pack(">HHQ", 60, 0, 2) + struct.pack(">HB", 0x8000, 2) + b"\xff\xfe"
        args = dumps(DELIVER_ARGS, ["ctag", 2, True, "nova", "k"])
        bad = (
            frame(1, CHANNEL, struct.pack(">HH", 60, 60) + args)
            + frame(2, CHANNEL, bad_header)
            + frame(3, CHANNEL, b"{}")
        )
        assert good[:method_frame_len].startswith(b"\x01")
        got: list[tuple[Any, ...]] = []
        reader = DeliveryReader(peer, CHANNEL, lambda d: got.append(fields(d)) or True)
        peer.send(good + bad, []).join(10)
        reader.read_frames(peer, 1.0)
        assert got[0] == (b"{}", "nova", "k", False, 1, {"content_type": "application/json"}, None)
        body, _, _, redelivered, tag, properties, why = got[1]
        assert (body, redelivered, tag, properties) == (b"{}", True, 2, {})
        assert why is not None and "UnicodeDecodeError" in why
    finally:
        peer.close()


def test_a_frame_without_its_end_octet_is_a_protocol_error_not_a_delivery():
    """A broken frame end raises py-amqp's UnexpectedFrame (the connection is dropped), nothing is delivered."""
    peer = Peer()
    try:
        broken = bytearray(delivery_frames(1, b"x", {}, False, "k"))
        broken[-1] = 0x00
        got: list[tuple[Any, ...]] = []
        reader = DeliveryReader(peer, CHANNEL, lambda d: got.append(fields(d)) or True)
        peer.send(bytes(broken), []).join(10)
        with pytest.raises(UnexpectedFrame):
            reader.read_frames(peer, 1.0)
        assert got == []
    finally:
        peer.close()


def test_a_delivery_cut_short_by_the_socket_timeout_is_kept_for_the_next_read():
    """Half a delivery, then SO_RCVTIMEO: TimeoutError, its start stays in py-amqp's buffer, and the rest
    completes it on the next read (once)."""
    peer = Peer()
    try:
        data = delivery_frames(7, b"hello", {"delivery_mode": 2}, False, "k")
        got: list[tuple[Any, ...]] = []
        reader = DeliveryReader(peer, CHANNEL, lambda d: got.append(fields(d)) or True)
        peer.send(data[:20], []).join(10)
        with pytest.raises(TimeoutError):
            reader.read_frames(peer, 1.0)
        assert got == [] and peer.transport._read_buffer == data[:20]
        peer.send(data[20:], []).join(10)
        reader.read_frames(peer, 1.0)
        assert got == [(b"hello", "nova", "k", False, 7, {"delivery_mode": 2}, None)]
        assert peer.transport._read_buffer == b""
    finally:
        peer.close()


def test_exchange_and_routing_key_come_right_past_the_bound_of_remembered_names():
    """Names are remembered by their bytes (bounded, then started over): a routing key per message, repeats,
    non-ASCII and empty names all come out as sent, and a repeated pair is one str object each."""
    peer = Peer()
    try:
        count = MAX_CACHED_NAMES * 2 + 50
        sent = [(f"ex{i % 3}" if i % 5 else "", f"k.{i}.ключ" if i % 2 else "same") for i in range(count)]
        data = b"".join(delivery_frames(i + 1, b"x", {}, False, key, exchange=ex) for i, (ex, key) in enumerate(sent))
        peer.send(data, [len(data) // 3]).join(10)
        reader = DeliveryReader(peer, CHANNEL, lambda d: peer.got.append(d) or True)
        read_all(peer, reader, count)
        assert [(d.exchange, d.routing_key) for d in peer.got] == sent
        assert [d.tag for d in peer.got] == list(range(1, count + 1))
        assert len(reader._names) <= MAX_CACHED_NAMES  # bounded, however many routing keys
        assert peer.got[2].routing_key is peer.got[32].routing_key  # ("ex2", "same"): one remembered pair
    finally:
        peer.close()
