"""Template lines: `{received_at} {routing_key} {event_type} {payload}` with named fields only.

Nothing in a template is ever evaluated: fields are looked up in fixed
tables of getters (``str.format`` on a user template could reach object
internals), and every value is escaped into the line.
"""

from __future__ import annotations

import datetime
import string
from collections.abc import Callable
from typing import Any

from bridged.delivery import Delivery
from bridged.formats.jsontext import ENCODER, body_value, jsonable
from bridged.formats.masking import body_needs_redaction, redact_body, redact_or_mark
from bridged.formats.notification import envelope_inner, notification
from bridged.formats.text import LineFormatter, body_text, escape_text, utc_now
from bridged.redact import Redactor


class TemplateError(ValueError):
    """A template names an unknown field or uses anything but plain {field}."""


def _text(value: Any) -> str:
    """A field value as text: JSON for objects and lists, ISO 8601 for times."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        try:
            return ENCODER.encode(value)
        except (ValueError, RecursionError, TypeError):
            return repr(value)
    if isinstance(value, datetime.datetime | bytes):
        return str(jsonable(value))
    return str(value)


class _Message:
    """One delivery as the template fields see it; the body is parsed (and redacted) at most once."""

    __slots__ = ("_note", "binding", "delivery", "redactor")

    def __init__(self, delivery: Delivery, binding: str, redactor: Redactor | None) -> None:
        self.delivery = delivery
        self.binding = binding
        self.redactor = redactor
        self._note: dict[str, Any] | None = None  # parsed on first use

    def note(self) -> dict[str, Any]:
        if self._note is None:
            message = notification(self.delivery) or {}
            if self.redactor is not None and self.redactor.needs(message):
                redacted = redact_or_mark(message, self.redactor)
                message = redacted if isinstance(redacted, dict) else {}
            self._note = message
        return self._note

    def body(self) -> str:
        body = self.delivery.body
        redactor = self.redactor
        if redactor is not None:
            value, encoding = body_value(body)
            if encoding is None and isinstance(value, dict | list):
                inner = envelope_inner(value)
                if body_needs_redaction(value, redactor, inner):
                    return _text(redact_body(value, redactor, inner=inner))
        return body_text(body)


FieldGetter = Callable[[_Message], str]


def _amqp_property(name: str) -> FieldGetter:
    key = "application_headers" if name == "headers" else name

    def get(message: _Message) -> str:
        value = message.delivery.properties.get(key)
        if key == "application_headers" and message.redactor is not None and message.redactor.needs(value):
            value = redact_or_mark(value, message.redactor)
        return _text(value)

    return get


def _notification_field(*keys: str) -> FieldGetter:
    def get(message: _Message) -> str:
        note = message.note()
        for key in keys:
            if key in note:
                return _text(note[key])
        return ""

    return get


AMQP_PROPERTIES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                   "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                   "type", "user_id", "app_id")  # fmt: skip

# Three groups with distinct names: the delivery, the oslo notification
# inside the body, and the AMQP properties (prefixed amqp_).
DELIVERY_FIELDS: dict[str, FieldGetter] = {
    "binding": lambda m: m.binding,
    "exchange": lambda m: str(m.delivery.exchange),
    "routing_key": lambda m: str(m.delivery.routing_key),
    "redelivered": lambda m: "true" if m.delivery.redelivered else "false",
    "delivery_tag": lambda m: str(m.delivery.tag),
    "received_at": lambda m: utc_now(),
    "body": _Message.body,
}
NOTIFICATION_FIELDS: dict[str, FieldGetter] = {
    name: _notification_field(name)
    for name in ("priority", "message_id", "timestamp", "publisher_id", "event_type", "payload")
}
NOTIFICATION_FIELDS["request_id"] = _notification_field("_context_request_id", "request_id")
PROPERTY_FIELDS: dict[str, FieldGetter] = {f"amqp_{name}": _amqp_property(name) for name in AMQP_PROPERTIES}
TEMPLATE_FIELDS: dict[str, FieldGetter] = {**DELIVERY_FIELDS, **NOTIFICATION_FIELDS, **PROPERTY_FIELDS}


def compile_template(template: str) -> list[tuple[str, str | None]]:
    """Split *template* into (literal, field) pairs; refuse anything but named fields."""
    if "\n" in template or "\r" in template:
        raise TemplateError("a template must be a single line (no newline)")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"invalid template {template!r}: {exc}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (spec or conversion or field not in TEMPLATE_FIELDS):
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            if field not in TEMPLATE_FIELDS:
                hint = f" (AMQP properties are amqp_{field})" if field in AMQP_PROPERTIES else ""
                why = f"unknown field {shown}{hint}; fields: {', '.join(sorted(TEMPLATE_FIELDS))}"
            else:
                why = f"{shown}: only plain {{name}} fields are allowed (no conversions or format specs)"
            raise TemplateError(why)
        parts.append((literal, field))
    return parts


def make_template(template: str, binding: str, redactor: Redactor | None = None) -> LineFormatter:
    parts = [(literal, TEMPLATE_FIELDS[field] if field else None) for literal, field in compile_template(template)]

    def format_template(delivery: Delivery) -> bytes:
        message = _Message(delivery, binding, redactor)
        out = []
        for literal, getter in parts:
            out.append(literal)
            if getter is not None:
                out.append(escape_text(getter(message)))
        return "".join(out).encode("utf-8", "backslashreplace")

    return format_template
