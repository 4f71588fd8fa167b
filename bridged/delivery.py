"""One message as bridged handles it: built by a source's session, read by formats, filters and sinks.

Each protocol's session turns its library's message (py-amqp's, proton's)
into this small record, so nothing downstream sees a library type and
nothing is ever written onto a library's objects. ``properties`` use the
AMQP 0-9-1 names (``application_headers`` for the header table), whatever
the protocol: AMQP 1.0 maps onto them as RabbitMQ does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

# `note` before anything parsed the body (None means: parsed, and no notification in it).
UNPARSED: Final[Any] = object()


class Delivery:
    """A received message and where it came from; `tag` is what its session settles it by."""

    __slots__ = ("body", "error", "exchange", "note", "properties", "redelivered", "refuse", "routing_key", "tag")

    def __init__(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        redelivered: bool = False,
        tag: int = 0,
        properties: Mapping[str, Any] | None = None,
        error: str | None = None,
        refuse: str | None = None,
    ) -> None:
        self.body = body
        self.exchange = exchange
        self.routing_key = routing_key
        self.redelivered = redelivered
        self.tag = tag
        self.properties: Mapping[str, Any] = {} if properties is None else properties
        # Why this delivery could not be read whole (undecodable properties or message): it is
        # still written, with the bridged_error marker, and settled like any other.
        self.error = error
        # Why this delivery cannot be taken at all (too large to hold): it is refused (dead-lettered),
        # never written, never the cause of a reconnect.
        self.refuse = refuse
        # The oslo notification inside the body, parsed at most once per delivery (formats,
        # filters and sinks share it); UNPARSED until someone needed it.
        self.note: Any = UNPARSED

    def __repr__(self) -> str:
        return f"Delivery(tag={self.tag}, routing_key={self.routing_key!r}, {len(self.body)} bytes)"
