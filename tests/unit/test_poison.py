"""Redelivery counting for max_redeliveries."""

from __future__ import annotations

from bridged.poison import MAX_TRACKED, RedeliveryCounter


class Message:
    def __init__(self, body: bytes, **properties: object) -> None:
        self.body = body
        self.properties = properties


def test_broker_count_wins_when_present():
    """Quorum queues' x-delivery-count is used as is (it survives our restarts)."""
    counter = RedeliveryCounter()
    message = Message(b"x", application_headers={"x-delivery-count": 7})
    assert counter.redeliveries(message) == 7
    assert counter.redeliveries(message) == 7


def test_local_count_by_message_id_or_body():
    """Without the header, each redelivery of the same message (by id, else by body) counts once more."""
    counter = RedeliveryCounter()
    assert [counter.redeliveries(Message(b"a", message_id="m1")) for _ in range(3)] == [1, 2, 3]
    assert [counter.redeliveries(Message(b"same body")) for _ in range(2)] == [1, 2]
    assert counter.redeliveries(Message(b"other body")) == 1
    counter.forget(Message(b"a", message_id="m1"))
    assert counter.redeliveries(Message(b"a", message_id="m1")) == 1


def test_table_is_bounded():
    counter = RedeliveryCounter()
    for i in range(MAX_TRACKED + 10):
        counter.redeliveries(Message(str(i).encode()))
    assert counter.redeliveries(Message(b"0")) == 1  # the oldest entries were dropped
    assert counter.redeliveries(Message(str(MAX_TRACKED + 9).encode())) == 2
