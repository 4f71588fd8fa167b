"""The oslo.messaging notification inside a body, parsed at most once per delivery, and what sinks read of it."""

from __future__ import annotations

from typing import Any, NamedTuple

from bridged.delivery import UNPARSED, Delivery
from bridged.formats.jsontext import body_value, check_json


def unwrap_oslo(value: Any) -> dict[str, Any] | None:
    """The notification dict inside an oslo.messaging 2.0 envelope (or a bare 1.0 one)."""
    if not isinstance(value, dict):
        return None
    envelope = value.get("oslo.message")
    if envelope is None:
        return value
    if not isinstance(envelope, str):
        return None
    try:
        inner = check_json(envelope)
    except ValueError:
        return None
    if not isinstance(inner, dict):
        return None
    if "oslo.version" in value:
        inner.setdefault("oslo.version", value["oslo.version"])
    return inner


def envelope_inner(value: Any) -> Any:
    """The parsed inner message of an oslo 2.0 envelope, or None."""
    if type(value) is dict:
        inner = value.get("oslo.message")
        if type(inner) is str:
            try:
                return check_json(inner)
            except ValueError:
                return None
    return None


def notification(delivery: Delivery) -> dict[str, Any] | None:
    """The oslo notification (or RPC message) carried by *delivery*, or None.

    Parsed once per delivery and kept on it (``note``): the oslo format, a
    filter, a syslog sink and a path template all read it from there.
    """
    note = delivery.note
    if note is not UNPARSED:
        return note  # type: ignore[no-any-return]
    body = delivery.body
    try:
        value = check_json(body) if type(body) is bytes else body_value(body)[0]
    except ValueError:
        value = None
    message = unwrap_oslo(value)
    delivery.note = message
    return message


class LineMeta(NamedTuple):
    """What a sink may need of a line's message beyond the line: syslog severity and MSGID, file paths."""

    priority: str | None = None
    event_type: str | None = None
    publisher_id: str | None = None
    routing_key: str = ""
    exchange: str = ""
    binding: str = ""


def notification_meta(delivery: Delivery, binding: str = "") -> LineMeta:
    """The notification's priority, event_type and publisher_id (None when absent), and where it came from."""
    message = notification(delivery) or {}
    priority, event_type, publisher = message.get("priority"), message.get("event_type"), message.get("publisher_id")
    return LineMeta(
        priority if type(priority) is str else None,
        event_type if type(event_type) is str else None,
        publisher if type(publisher) is str else None,
        str(delivery.routing_key),
        str(delivery.exchange),
        binding,
    )
