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
