"""What the AMQP 1.0 source hands the formats: RabbitMQ's mapping kept, and a message proton cannot decode marked."""

from __future__ import annotations

import pytest

pytest.importorskip("proton")

from proton import Message

from bridged.formats import make_formatter
from bridged.sources.amqp10 import Amqp10Session


def engine() -> Amqp10Session:
    """A session's decoding half, without a connection."""
    e = Amqp10Session.__new__(Amqp10Session)
    e._message = Message()
    e._tag = 7
    return e


def test_fields_of_a_message_relayed_from_amqp_0_9_1():
    """The subject is the routing key (RabbitMQ 3.x); id, headers, time and persistence become properties."""
    data = Message(body=b'{"n": 1}', subject="notifications.info", id="m-1", durable=True, first_acquirer=True,
                   properties={"tenant": "t1"}, creation_time=1_700_000_000.25,
                   content_type="application/json").encode()  # fmt: skip
    delivery = engine()._delivery(data)
    assert delivery.body == b'{"n": 1}' and delivery.error is None
    assert (delivery.exchange, delivery.routing_key, delivery.redelivered, delivery.tag) == (
        "", "notifications.info", False, 7)  # fmt: skip
    assert delivery.properties == {"content_type": "application/json", "message_id": "m-1", "timestamp": 1_700_000_000,
                                   "delivery_mode": 2, "application_headers": {"tenant": "t1"}}  # fmt: skip


def test_a_redelivered_message_carries_its_count_for_max_redeliveries():
    data = Message(body="x", delivery_count=3).encode()
    delivery = engine()._delivery(data)
    assert delivery.redelivered is True
    assert delivery.properties["application_headers"] == {"x-delivery-count": 3}
    assert delivery.body == b"x"


def test_bytes_that_are_no_amqp_message_do_not_stop_the_binding():
    """qpid-proton decodes garbage leniently (an empty message); either way a line comes out, no exception
    (which would reconnect and meet the same delivery forever). A decode error proton does report is marked."""
    delivery = engine()._delivery(b"\xff\xfe not an AMQP message")
    assert make_formatter("json", "b")(delivery).startswith(b'{"binding":"b"')


def _str8(raw: bytes) -> bytes:
    return b"\xa1" + bytes([len(raw)]) + raw


def _section(code: int, value: bytes) -> bytes:
    return b"\x00\x53" + bytes([code]) + value


@pytest.mark.parametrize(
    ("data", "routing_key", "body", "why"),
    [
        (_section(0x73, b"\xc0" + bytes([len(_str8(b"\xff")) + 4, 4]) + b"\x40\x40\x40" + _str8(b"\xff"))
         + _section(0x75, b"\xa0\x01b"), "\\xff", b"b", "a string that is not UTF-8"),
        (_section(0x77, _str8(b"a\xffb")), "", b"a\xffb", "a string that is not UTF-8"),
        (_section(0x74, b"\xc1\x07\x02\xc0\x01\x00" + _str8(b"v")) + _section(0x75, b"\xa0\x01k"), "", b"k",
         "a map key that is a list or a map"),
        (b"\xff garbage", "", b"\xff garbage", "not an AMQP 1.0 message"),
        (_section(0x75, b"\xa0\x10only three"), "", None, "truncated"),
    ],
)  # fmt: skip
def test_content_proton_refuses_is_read_leniently_and_marked(data, routing_key, body, why):
    """Text that is not UTF-8, a list as a map key, garbage, a truncated section: a Delivery, marked, no exception."""
    delivery = engine()._delivery(data)
    assert why in (delivery.error or "")
    assert delivery.routing_key == routing_key
    assert delivery.body == (data if body is None else body)  # as it came, when nothing could be read


def test_text_that_py_amqp_reads_is_read_the_same_and_not_marked():
    """A lone surrogate (as py-amqp decodes AMQP 0-9-1 text, surrogatepass): the same routing key, no marker."""
    subject = "key.\ud800".encode("utf-8", "surrogatepass")
    data = _section(0x73, b"\xc0" + bytes([len(_str8(subject)) + 4, 4]) + b"\x40\x40\x40" + _str8(subject))
    delivery = engine()._delivery(data + _section(0x75, b"\xa0\x01x"))
    assert delivery.error is None and delivery.routing_key == "key.\ud800"


def test_only_a_first_acquirer_written_false_means_delivered_before():
    """The field defaults to false, so a header without it (Artemis, Qpid) says nothing; RabbitMQ writes
    true, and false on a redelivery."""
    body = b"\x00\x53\x77\xa0\x01x"  # an amqp-value section: the binary b"x"
    header = b"\x00\x53\x70\xc0\x05\x04\x41\x40\x40"  # durable, priority and ttl unset, then first-acquirer
    written_false, written_true = header + b"\x42", header + b"\x41"
    durable_only = b"\x00\x53\x70\xc0\x02\x01\x41"
    assert [engine()._delivery(head + body).redelivered for head in (written_false, written_true, durable_only)] == [
        True, False, False]  # fmt: skip
    assert engine()._delivery(durable_only + body).properties == {"delivery_mode": 2}
