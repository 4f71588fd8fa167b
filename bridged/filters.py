"""Which messages a binding writes: keep and drop rules on routing key, notification fields and headers.

A rule maps a field to glob patterns (`*`, `?`, `[...]`). A message is kept
when it matches every `keep` field (any of that field's patterns) and no
`drop` field. A dropped message is acked with its batch and counted, never
written. The body is parsed only when a rule reads a notification field.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

from bridged.delivery import Delivery
from bridged.formats import notification

# Fields of the notification inside the body (oslo.messaging); priority compares case-insensitively.
NOTIFICATION_FIELDS = ("event_type", "publisher_id", "priority")
DELIVERY_FIELDS = ("routing_key", "exchange")
HEADER_PREFIX = "header."

Getter = Callable[[Delivery, dict[str, Any] | None], str | None]


def field_names() -> tuple[str, ...]:
    return (*DELIVERY_FIELDS, *NOTIFICATION_FIELDS, HEADER_PREFIX + "<name>")


def valid_field(name: str) -> bool:
    return (
        name in DELIVERY_FIELDS
        or name in NOTIFICATION_FIELDS
        or (name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX))
    )


def _getter(name: str) -> Getter:
    if name == "routing_key":
        return lambda delivery, note: _text(delivery.routing_key)
    if name == "exchange":
        return lambda delivery, note: _text(delivery.exchange)
    if name in NOTIFICATION_FIELDS:
        return lambda delivery, note: _text(note.get(name)) if note else None
    header = name[len(HEADER_PREFIX) :]

    def get_header(delivery: Delivery, note: dict[str, Any] | None) -> str | None:
        headers = delivery.properties.get("application_headers")
        return _text(headers.get(header)) if isinstance(headers, dict) else None

    return get_header


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _matcher(field: str, patterns: tuple[str, ...]) -> Callable[[str | None], bool]:
    flags = re.IGNORECASE if field == "priority" else 0
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), flags)
    return lambda value: value is not None and regex.match(value) is not None


def compile_filter(
    keep: Mapping[str, tuple[str, ...]], drop: Mapping[str, tuple[str, ...]]
) -> Callable[[Delivery], bool] | None:
    """A predicate: True to write the message, False to drop it; None when there are no rules."""
    if not keep and not drop:
        return None
    keep_rules = [(_getter(f), _matcher(f, p)) for f, p in keep.items()]
    drop_rules = [(_getter(f), _matcher(f, p)) for f, p in drop.items()]
    needs_body = any(f in NOTIFICATION_FIELDS for f in (*keep, *drop))

    def wanted(delivery: Delivery) -> bool:
        note = notification(delivery) if needs_body else None
        for get, matches in keep_rules:
            if not matches(get(delivery, note)):
                return False
        return not any(matches(get(delivery, note)) for get, matches in drop_rules)

    return wanted
