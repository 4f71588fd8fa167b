"""The json format: one JSON object per message, with where it came from, its properties and its body.

The record has one shape, built two ways: ``record()`` + ``dump()`` for any
body, and a fast path for the common one (an ASCII JSON body on one line)
that writes the same fields as text and copies the body in as it is.
tests/unit/test_json_shape.py proves the two agree on generated messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridged.delivery import Delivery
from bridged.formats.jsontext import body_value, check_json, dump, quote, splice_safe
from bridged.formats.masking import body_needs_redaction, redact_body, redact_or_mark, redacted_text
from bridged.formats.notification import envelope_inner
from bridged.formats.text import LineFormatter, body_text, utc_now
from bridged.redact import Redactor

# Record keys that an unwrapped oslo message may not overwrite.
RECORD_KEYS = frozenset(("binding", "exchange", "routing_key", "redelivered", "received_at", "properties"))


def properties(props: Mapping[str, Any], redactor: Redactor | None) -> dict[str, Any]:
    """AMQP properties as set; the header table (py-amqp's application_headers) is written as headers."""
    out = dict(props)
    if "application_headers" in out:
        headers = _text_keys(out.pop("application_headers"))
        if redactor is not None and redactor.needs(headers):
            headers = redact_or_mark(headers, redactor)
        out["headers"] = headers
    return out


def _text_keys(value: Any, depth: int = 0) -> Any:
    """A header table with every key as text: py-amqp passes keys that are not UTF-8 as bytes.

    The table itself comes back when every key already is text (the usual case): no copy.
    """
    if depth >= 100 or not isinstance(value, dict | list):
        return value
    items = value.items() if isinstance(value, dict) else enumerate(value)
    fixed = {index: _text_keys(item, depth + 1) for index, item in items if isinstance(item, dict | list)}
    fixed = {index: item for index, item in fixed.items() if item is not value[index]}
    if isinstance(value, list):
        return [fixed.get(i, item) for i, item in enumerate(value)] if fixed else value
    if not fixed and all(type(key) is str for key in value):
        return value
    return {body_text(key) if isinstance(key, bytes) else str(key): fixed.get(key, item)
            for key, item in value.items()}  # fmt: skip


def record(delivery: Delivery, binding: str, redactor: Redactor | None = None) -> dict[str, Any]:
    """The json format's fields for *delivery*."""
    value, encoding = body_value(delivery.body)
    if redactor is not None and encoding is None:
        value = redact_body(value, redactor)
    rec: dict[str, Any] = {
        "binding": binding,
        "exchange": delivery.exchange,
        "routing_key": delivery.routing_key,
        "redelivered": bool(delivery.redelivered),
        "received_at": utc_now(),
        "properties": properties(delivery.properties, redactor),
        "body": value,
    }
    if encoding:
        rec["body_encoding"] = encoding
    return rec


# What most publishers set: a persistent message and nothing else.
_PLAIN_PROPERTIES = {"delivery_mode": 2}
_PLAIN_PROPERTIES_JSON = '{"delivery_mode":2}'
# Record beginnings remembered per formatter, one per exchange, routing key and redelivered flag.
MAX_HEADS = 1024


class RecordPrefix:
    """The json record up to (not including) the body, built as text: no dict, no encoder pass.

    One per formatter, remembering what repeats from message to message: the
    properties' JSON for the last properties seen (the AMQP 0-9-1 reader hands
    one shared, read-only dict to every delivery with the same content header)
    and the record's beginning for each exchange, routing key and redelivered
    flag. Only the received_at time is new text for most messages.
    """

    __slots__ = ("_binding_json", "_heads", "_properties", "_redactor", "_tail")

    def __init__(self, binding: str, redactor: Redactor | None) -> None:
        self._binding_json = quote(binding)
        self._redactor = redactor
        self._properties: Mapping[str, Any] | None = None
        self._tail = ""
        self._heads: dict[tuple[str, str, bool], str] = {}

    def __call__(self, delivery: Delivery) -> str:
        props = delivery.properties
        if props is not self._properties:
            properties_json = (_PLAIN_PROPERTIES_JSON if props == _PLAIN_PROPERTIES
                               else dump(properties(props, self._redactor)).decode())  # fmt: skip
            self._tail = f'","properties":{properties_json}'
            self._properties = props
        key = (delivery.exchange, delivery.routing_key, delivery.redelivered)
        head = self._heads.get(key)
        if head is None:
            head = self._head(key)
        return f"{head}{utc_now()}{self._tail}"

    def _head(self, key: tuple[str, str, bool]) -> str:
        """The record's text up to the received_at value; exchanges and routing keys repeat, so most are built once."""
        exchange, routing_key, redelivered = key
        head = (
            f'{{"binding":{self._binding_json},"exchange":{quote(str(exchange))},'
            f'"routing_key":{quote(str(routing_key))},'
            f'"redelivered":{"true" if redelivered else "false"},"received_at":"'
        )
        if len(self._heads) >= MAX_HEADS:
            self._heads.clear()  # a routing key per message: bounded, start over
        self._heads[key] = head
        return head


def make_json(binding: str, redactor: Redactor | None = None) -> LineFormatter:
    prefix = RecordPrefix(binding, redactor)

    def format_json(delivery: Delivery) -> bytes:
        body = delivery.body
        if type(body) is bytes and splice_safe(body):
            try:
                value = check_json(body)
            except ValueError:
                text = quote(body.decode("ascii"))
                return f'{prefix(delivery)},"body":{text}}}'.encode("ascii")
            inner = envelope_inner(value) if redactor is not None else None
            if redactor is not None and body_needs_redaction(value, redactor, inner):
                body = redacted_text(value, redactor, inner)  # type: ignore[assignment]
                if body is None:
                    return dump(record(delivery, binding, redactor))
            return b"".join((prefix(delivery).encode("ascii"), b',"body":', body, b"}"))
        return dump(record(delivery, binding, redactor))

    return format_json
