"""Publish with publisher confirms: a window of unconfirmed messages, counted as the broker answers.

The `bridged publish` tool's engine. Every message is mandatory, so one
that no queue takes comes back (basic.return) and is counted, not lost in
silence. Confirms are read while publishing: the window bounds what is in
flight, and a rate limit waits by reading confirms rather than sleeping.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import amqp

# Unconfirmed messages in flight before publish() waits for confirms: large
# enough to keep the broker busy, small enough that a nack is noticed soon.
CONFIRM_WINDOW = 1000

# oslo.messaging's notification priorities (routing key suffixes).
OSLO_PRIORITIES = ("AUDIT", "CRITICAL", "DEBUG", "INFO", "ERROR", "SAMPLE", "WARN")


@dataclass
class PublishResult:
    sent: int = 0
    confirmed: int = 0
    nacked: int = 0
    returned: int = 0  # confirmed, but no queue took it (mandatory: basic.return)

    @property
    def unconfirmed(self) -> int:
        return self.sent - self.confirmed - self.nacked

    @property
    def complete(self) -> bool:
        """Every message confirmed and taken by a queue."""
        return self.confirmed == self.sent and not self.returned


class Publisher:
    """Publishes on one channel in confirm mode and counts the broker's answers."""

    def __init__(self, conn: amqp.Connection, confirm_timeout: float, window: int = CONFIRM_WINDOW) -> None:
        self._conn = conn
        self._confirm_timeout = confirm_timeout  # a full window with no answer for this long: give up
        self._window = window
        self.result = PublishResult()
        self._first_open = 1  # lowest delivery tag not known to be settled (tags run from 1)
        self._settled_alone: set[int] = set()  # settled by a single (not multiple) ack above _first_open
        self._channel = conn.channel()
        self._channel.confirm_select()
        self._channel.events["basic_ack"].add(self._on_ack)
        self._channel.events["basic_nack"].add(self._on_nack)
        self._channel.events["basic_return"].add(self._on_return)

    def check_exchange(self, exchange: str) -> None:
        """Raise amqp NotFound unless *exchange* exists ('' is the default exchange, always there)."""
        if exchange:
            probe = self._conn.channel()
            probe.exchange_declare(exchange, "topic", passive=True)
            probe.close()

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: dict[str, Any]) -> None:
        """Send one message; waits (reading confirms) while the window is full."""
        while self._in_flight() >= self._window:
            self._conn.drain_events(timeout=self._confirm_timeout)  # TimeoutError: the broker stopped answering
        self._channel.basic_publish(amqp.Message(body, **properties), exchange, routing_key, mandatory=True)
        self.result.sent += 1

    def wait_until(self, deadline: float) -> None:
        """Read confirms (and returns) until *deadline* (time.monotonic)."""
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                return

    def settle(self, timeout: float) -> PublishResult:
        """Wait up to *timeout* seconds for every sent message to be confirmed; the counts."""
        deadline = time.monotonic() + timeout
        while self._in_flight() and (remaining := deadline - time.monotonic()) > 0:
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                break
        return self.result

    def _in_flight(self) -> int:
        return self.result.sent - self.result.confirmed - self.result.nacked

    def _settle(self, tag: int, multiple: bool) -> int:
        """Mark *tag* (and with *multiple* all below it) settled; how many were newly settled."""
        if multiple:
            count = sum(1 for t in range(self._first_open, tag + 1) if t not in self._settled_alone)
            self._settled_alone = {t for t in self._settled_alone if t > tag}
            self._first_open = max(self._first_open, tag + 1)
            return count
        if tag < self._first_open or tag in self._settled_alone:
            return 0
        self._settled_alone.add(tag)
        while self._first_open in self._settled_alone:
            self._settled_alone.remove(self._first_open)
            self._first_open += 1
        return 1

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self.result.confirmed += self._settle(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self.result.nacked += self._settle(tag, multiple)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self.result.returned += 1


def oslo_notification(event_type: str, payload: Any, priority: str, publisher_id: str) -> bytes:
    """An oslo.messaging 2.0 notification envelope, as its `messagingv2` driver sends one."""
    inner = {
        "message_id": str(uuid.uuid4()),
        "publisher_id": publisher_id,
        "event_type": event_type,
        "priority": priority.upper(),
        "payload": payload,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def oslo_priority(routing_key: str) -> str:
    """The priority a notification routing key names (`notifications.error` -> ERROR), INFO otherwise."""
    suffix = routing_key.rpartition(".")[2].upper()
    return suffix if suffix in OSLO_PRIORITIES else "INFO"
