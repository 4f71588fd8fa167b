"""`bridged publish amqp10://HOST/ADDRESS [BODY]`: send to an AMQP 1.0 address and report each message's outcome.

Qpid's `spout`, with outcomes it never had: every message is sent unsettled
and the broker's answer counted (accepted, rejected, released, modified); the
exit code is 0 only when every one was accepted. At most WINDOW messages are
unanswered at a time.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from proton import Delivery, Endpoint, Link, Message, ProtonException

from bridged.amqp10conn import Amqp10Connection
from bridged.broker import RefusedWithHint, describe_error, io_timeout, passwords_of
from bridged.cli.common import EXIT_CONFIG, EXIT_OK, EXIT_UNDELIVERED, UsageError, fail
from bridged.config import BrokerConfig
from bridged.secrets import mask_url

WINDOW = 1000
OUTCOMES: dict[int, str] = {Delivery.ACCEPTED: "accepted", Delivery.REJECTED: "rejected", Delivery.RELEASED: "released",
            Delivery.MODIFIED: "modified"}  # fmt: skip
# The 0-9-1 properties `--property` takes (publish.py checks their values) and their AMQP 1.0 fields.
FIELDS = {"content_type": "content_type", "content_encoding": "content_encoding", "message_id": "id",
          "correlation_id": "correlation_id", "reply_to": "reply_to", "user_id": "user_id",
          "priority": "priority"}  # fmt: skip


class Amqp10Sender:
    """A sender link on its own connection: send, then collect the outcomes."""

    def __init__(self, broker: BrokerConfig, url: str, address: str) -> None:
        self.outcomes: Counter[str] = Counter()
        self.sent = 0
        self._address_key = f"ADDRESS {address!r}"
        self._timeout = io_timeout(broker)
        self._wire = Amqp10Connection(broker, url, "publish")
        self._sender = self._wire.session.sender(f"bridged-publish-{os.getpid()}")
        self._sender.target.address = address
        self._sender.snd_settle_mode = Link.SND_UNSETTLED  # every message answered
        self._sender.open()
        self._unanswered: list[Delivery] = []
        self._wire.write()
        deadline = time.monotonic() + broker.connect_timeout + self._timeout
        while not self._sender.state & Endpoint.REMOTE_ACTIVE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker did not attach address {address!r}")
            self._pump(0.2)

    def send(self, message: Message) -> None:
        """Send one message; waits (reading outcomes) while there is no credit or the window is full."""
        deadline = time.monotonic() + self._timeout
        while self._sender.credit <= 0 or len(self._unanswered) >= WINDOW:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no credit or outcome from the broker for {self._timeout:g} s")
            self._pump(0.2)
        delivery = self._sender.delivery(str(self.sent))
        self._sender.send(message.encode())
        self._sender.advance()
        self._unanswered.append(delivery)
        self.sent += 1
        self._pump(0)

    def wait_for_outcomes(self, timeout: float) -> int:
        """Read outcomes until every message has one or *timeout* passes without a new one; the unanswered."""
        deadline = time.monotonic() + timeout
        while self._unanswered and time.monotonic() < deadline:
            before = len(self._unanswered)
            self._pump(0.2)
            if len(self._unanswered) < before:
                deadline = time.monotonic() + timeout
        return len(self._unanswered)

    def _pump(self, timeout: float) -> None:
        try:
            self._wire.read(timeout)
        except ConnectionError:
            self._wire.check(self._sender, self._address_key)
            raise
        answered = [d for d in self._unanswered if d.remote_state or d.settled]
        if answered:
            for delivery in answered:
                self.outcomes[OUTCOMES.get(int(delivery.remote_state or 0), "settled without an outcome")] += 1
                delivery.settle()
            self._unanswered = [d for d in self._unanswered if not (d.remote_state or d.settled)]
        self._wire.flush()
        self._wire.check(self._sender, self._address_key)

    def close(self) -> None:
        self._wire.close(True, self._sender)


def amqp10_message(body: bytes, properties: dict[str, Any], subject: str | None) -> Message:
    """A proton message from publish's checked 0-9-1 properties: the body as a data section (bytes as they are),
    headers as application properties, delivery_mode 2 as durable, expiration as ttl, timestamp as creation."""
    message = Message(body=body, inferred=True, subject=subject)
    for name, value in properties.items():
        if name in FIELDS:
            setattr(message, FIELDS[name], value.encode() if name == "user_id" else value)
        elif name == "application_headers":
            message.properties = dict(value)  # type: ignore[assignment]  # proton's stub says None
        elif name == "delivery_mode":
            message.durable = value == 2
        elif name == "expiration":
            message.ttl = int(value) / 1000
        elif name == "timestamp":
            message.creation_time = float(value)
        else:
            raise UsageError(f"--property {name}: AMQP 1.0 has no such field (send it as a header: -H {name}=...)")
    return message


def publish(broker: BrokerConfig, address: str, messages: Iterator[Message]) -> int:
    """Send every message and print the outcomes; exit 0 only if each one was accepted."""
    url = broker.urls[0]
    passwords = passwords_of(broker)
    try:
        sender = Amqp10Sender(broker, url, address)
    except RefusedWithHint as exc:
        return fail(f"{mask_url(url)}: {describe_error(exc, passwords)}", EXIT_CONFIG)
    except (OSError, ProtonException) as exc:
        return fail(f"cannot publish to {mask_url(url)}: {describe_error(exc, passwords)}", EXIT_CONFIG)
    try:
        for message in messages:
            sender.send(message)
        unanswered = sender.wait_for_outcomes(io_timeout(broker))
    except KeyboardInterrupt:
        print(summary(sender.sent, sender.outcomes, sender.wait_for_outcomes(io_timeout(broker))), flush=True)
        return 130
    except (OSError, ProtonException, RefusedWithHint) as exc:
        print(summary(sender.sent, sender.outcomes, sender.sent - sum(sender.outcomes.values())), flush=True)
        return fail(f"publishing stopped: {describe_error(exc, passwords)}", EXIT_UNDELIVERED)
    finally:
        sender.close()
    print(summary(sender.sent, sender.outcomes, unanswered), flush=True)
    return EXIT_OK if sender.outcomes["accepted"] == sender.sent else EXIT_UNDELIVERED


def summary(sent: int, outcomes: Counter[str], unanswered: int) -> str:
    """`10 sent, 10 accepted`, then every other outcome the broker gave, and what it never answered."""
    parts = [f"{sent} sent", f"{outcomes['accepted']} accepted"]
    parts += [f"{count} {name}" for name, count in sorted(outcomes.items()) if name != "accepted" and count]
    if unanswered:
        parts.append(f"{unanswered} not answered")
    return ", ".join(parts)
