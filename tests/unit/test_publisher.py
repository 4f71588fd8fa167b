"""Counting publisher confirms, and the message properties publish builds from the command line."""

from __future__ import annotations

import json

import pytest

from bridged.cli.common import UsageError
from bridged.cli.publish import message_properties, summary
from bridged.publisher import Publisher, PublishResult, oslo_notification, oslo_priority


def counting(sent: int) -> Publisher:
    """A Publisher with no connection, for its confirm bookkeeping only."""
    publisher = Publisher.__new__(Publisher)
    publisher.result = PublishResult(sent=sent)
    publisher._first_open = 1
    publisher._settled_alone = set()
    return publisher


def test_multiple_and_single_acks_count_each_message_once():
    """Single acks out of order, then a multiple ack over them: each tag counts once."""
    publisher = counting(10)
    publisher._on_ack(3, False)
    publisher._on_ack(5, False)
    publisher._on_ack(3, False)  # a repeat changes nothing
    publisher._on_nack(4, False)
    assert (publisher.result.confirmed, publisher.result.nacked) == (2, 1)
    publisher._on_ack(6, True)  # 1, 2 and 6 are new
    assert (publisher.result.confirmed, publisher.result.nacked, publisher.result.unconfirmed) == (5, 1, 4)
    publisher._on_ack(10, True)
    assert publisher.result.confirmed == 9 and publisher.result.unconfirmed == 0 and not publisher.result.complete
    assert summary(publisher.result) == "10 sent, 9 confirmed, 1 nacked by the broker"


def test_returned_messages_make_a_run_incomplete():
    result = PublishResult(sent=3, confirmed=3, returned=1)
    assert not result.complete
    assert summary(result) == "3 sent, 3 confirmed, 1 unroutable (no queue is bound for this routing key: returned)"
    assert PublishResult(sent=2, confirmed=2).complete


def test_oslo_envelope_and_priority():
    """The envelope is what oslo.messaging's messagingv2 driver sends; the priority follows the routing key."""
    outer = json.loads(oslo_notification("a.b", {"k": 1}, "warn", "svc.host"))
    assert set(outer) == {"oslo.version", "oslo.message"} and outer["oslo.version"] == "2.0"
    inner = json.loads(outer["oslo.message"])
    assert (inner["event_type"], inner["priority"], inner["publisher_id"], inner["payload"]) == (
        "a.b", "WARN", "svc.host", {"k": 1})  # fmt: skip
    assert oslo_priority("notifications.error") == "ERROR"
    assert oslo_priority("versioned_notifications.sample") == "SAMPLE"
    assert oslo_priority("anything") == "INFO"


def test_message_properties_from_the_command_line():
    props = message_properties([("message_id", "m"), ("priority", "3"), ("timestamp", "2024-01-02T00:00:00+00:00"),
                                ("expiration", "60000")], [("a", "1")], persistent=True, oslo=True)  # fmt: skip
    assert props == {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
                     "message_id": "m", "priority": 3, "timestamp": 1704153600, "expiration": "60000",
                     "application_headers": {"a": "1"}}  # fmt: skip


@pytest.mark.parametrize(
    ("pair", "expected"),
    [
        (("priority", "256"), "from 0 to 255"),
        (("delivery_mode", "3"), "from 1 to 2"),
        (("expiration", "1m"), "expected milliseconds"),
        (("timestamp", "yesterday"), "seconds since 1970 or an ISO 8601 time"),
        (("timestamp", "99999999999999999999999"), "out of range"),
        (("headers", "x"), "unknown property 'headers'"),
    ],
)
def test_bad_properties_name_the_option(pair, expected):
    with pytest.raises(UsageError, match=expected):
        message_properties([pair], [], persistent=False, oslo=False)
