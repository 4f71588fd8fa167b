"""What the unit tests share: deliveries as a session builds them."""

from __future__ import annotations

from typing import Any

from bridged.delivery import Delivery


def make_delivery(body: bytes | str, routing_key: str = "notifications.info", redelivered: bool = False,
                  exchange: str = "nova", tag: int = 7, **properties: Any) -> Delivery:  # fmt: skip
    """A delivery from exchange nova with these AMQP properties (py-amqp's names: application_headers, ...)."""
    return Delivery(body, exchange, routing_key, redelivered, tag, properties)  # type: ignore[arg-type]
