"""qpid-proton beyond its public API, in one place, checked when imported.

Reading each delivery through proton's Python objects (the reactor's
events, Message properties that wrap every field) cost more than all the
rest of bridged's work per message, so the AMQP 1.0 source reads raw
deliveries with proton's C API (`cproton`, as proton's own classes call it)
and decodes sections with `proton._data.Data`. Neither is a public API: on
import this module encodes a message with proton's public API and decodes
it back through the same calls the source uses; a proton that does not give
the same fields is refused with one line (ProtonUnfit) rather than read wrong.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import proton

from bridged.amqp10wire import Malformed, acquired_before, check_sections, lenient_decode, text_of

try:
    from cproton import (  # type: ignore[import-untyped]
        PN_ACCEPTED,
        PN_EOS,
        PN_REJECTED,
        isnull,
        pn_delivery_partial,
        pn_delivery_pending,
        pn_delivery_readable,
        pn_delivery_settle,
        pn_delivery_settled,
        pn_delivery_update,
        pn_link_advance,
        pn_link_current,
        pn_link_recv,
        pn_message_annotations,
        pn_message_body,
        pn_message_decode,
        pn_message_get_content_encoding,
        pn_message_get_content_type,
        pn_message_get_creation_time,
        pn_message_get_delivery_count,
        pn_message_get_reply_to,
        pn_message_get_subject,
        pn_message_get_user_id,
        pn_message_is_durable,
        pn_message_is_first_acquirer,
        pn_message_properties,
    )  # fmt: skip
    from proton._data import Data
except ImportError as exc:  # pragma: no cover - depends on the installed proton
    version = ".".join(map(str, proton.VERSION))
    raise ImportError(f"python-qpid-proton {version} lacks what bridged reads deliveries with: {exc}") from exc

__all__ = [
    "PN_ACCEPTED", "PN_EOS", "PN_REJECTED", "Decoded", "ProtonUnfit", "decode_message", "isnull", "pn_delivery_partial",
    "pn_delivery_pending", "pn_delivery_readable", "pn_delivery_settle", "pn_delivery_settled",
    "pn_delivery_update", "pn_link_advance", "pn_link_current", "pn_link_recv",
]  # fmt: skip


class ProtonUnfit(ImportError):
    """The installed qpid-proton does not decode as bridged expects."""


# (properties, exchange, routing key, redelivered, body, why it is written marked or None)
Decoded = tuple[dict[str, Any], str, str, bool, bytes, str | None]


_TEXT_FIELDS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("content_type", pn_message_get_content_type), ("content_encoding", pn_message_get_content_encoding),
    ("reply_to", pn_message_get_reply_to), ("user_id", pn_message_get_user_id),
)  # fmt: skip


def _map(pointer: Any) -> dict[Any, Any] | None:
    """An AMQP map section (application properties, annotations) as a dict, None when absent."""
    data = Data(pointer)
    if not data.next():
        return None
    value = data.get_object()
    return value if isinstance(value, dict) else None


def _body_bytes(body: Any) -> bytes:
    """The message body as bytes: data sections as they are, text as UTF-8, other AMQP values as JSON."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, memoryview | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")
    if body is None:
        return b""
    return json.dumps(body, default=str, ensure_ascii=False).encode("utf-8", "surrogateescape")


def decode_message(message: proton.Message, data: bytes) -> Decoded:
    """*data* (one whole delivery) decoded into *message* and read with proton's C getters.

    The Message properties wrap each field (symbols, Data objects) and cost
    more than the decode itself. RabbitMQ's 0-9-1 mapping applies where it
    can: the subject (or an x-opt-routing-key annotation) is the routing key,
    application properties are the header table, with the delivery count in
    it as x-delivery-count (what max_redeliveries reads). Bytes that are not
    a whole AMQP message are returned as they came, with why; content proton
    refuses (text not UTF-8, a list as a map key) is decoded leniently
    (amqp10wire.py), and marked when something had to be escaped.
    """
    problem = check_sections(data)
    if problem is not None:
        return {}, "", "", False, data, f"not an AMQP 1.0 message ({problem})"
    try:
        return _decode(message, data)
    except (UnicodeDecodeError, TypeError, ValueError, KeyError) as exc:
        try:
            properties, exchange, routing_key, redelivered, body, problems = lenient_decode(data)
        except (Malformed, IndexError, struct.error) as broken:
            return {}, "", "", False, data, f"undecodable AMQP 1.0 message ({broken})"
        why = f"undecodable AMQP 1.0 content: {', '.join(dict.fromkeys(problems))}" if problems else None
        if why is None and not isinstance(exc, UnicodeDecodeError):
            why = f"undecodable AMQP 1.0 content: {type(exc).__name__}"
        return properties, exchange, routing_key, redelivered, body, why


def _decode(message: proton.Message, data: bytes) -> Decoded:
    """The fast way: proton's C decoder and getters."""
    msg = message._msg
    code = pn_message_decode(msg, data)
    if code < 0:
        return {}, "", "", False, data, f"not an AMQP 1.0 message (qpid-proton decode error {code})"
    properties: dict[str, Any] = {}
    for key, getter in _TEXT_FIELDS:
        value = getter(msg)
        if value:
            properties[key] = text_of(value)
    for key, value in (("message_id", message.id), ("correlation_id", message.correlation_id)):
        if value is not None:
            properties[key] = text_of(value)
    created = pn_message_get_creation_time(msg)
    if created:
        properties["timestamp"] = created // 1000  # AMQP 1.0 counts milliseconds
    if pn_message_is_durable(msg):
        properties["delivery_mode"] = 2
    count = pn_message_get_delivery_count(msg)
    headers = _map(pn_message_properties(msg))
    if count:
        headers = {**(headers or {}), "x-delivery-count": count}
    if headers:
        properties["application_headers"] = headers
    annotations = _map(pn_message_annotations(msg)) or {}
    exchange = text_of(annotations.get("x-opt-exchange-name") or "")
    # RabbitMQ 3.x puts a 0-9-1 message's routing key in the subject; Qpid and Artemis annotate it.
    routing_key = text_of(annotations.get("x-opt-routing-key") or pn_message_get_subject(msg) or "")
    # RabbitMQ writes first-acquirer true on a first delivery: only a false (or absent) one needs the bytes.
    redelivered = bool(count) or (not pn_message_is_first_acquirer(msg) and acquired_before(data))
    body = Data(pn_message_body(msg))
    return (properties, exchange, routing_key, redelivered, _body_bytes(body.get_object() if body.next() else None),
            None)  # fmt: skip


def _version() -> str:
    return ".".join(map(str, proton.VERSION))


def _check() -> None:
    """Encode with proton's public API, decode as the source does: the same fields, or ProtonUnfit."""
    sent = proton.Message(body=b'{"n": 1}', subject="k", id="m-1", durable=True, properties={"h": "v"},
                          content_type="application/json", creation_time=1_700_000_000.5,
                          delivery_count=2)  # fmt: skip
    try:
        decoded = decode_message(proton.Message(), sent.encode())
    except Exception as exc:  # any failure means: not the proton bridged was built on
        raise ProtonUnfit(f"python-qpid-proton {_version()}: decoding failed ({type(exc).__name__}: {exc}); "
                          "install a version bridged supports: pip install 'bridged[amqp10]'") from exc  # fmt: skip
    expected = (
        {"content_type": "application/json", "message_id": "m-1", "timestamp": 1_700_000_000, "delivery_mode": 2,
         "application_headers": {"h": "v", "x-delivery-count": 2}},
        "", "k", True, b'{"n": 1}', None,
    )  # fmt: skip
    if decoded != expected:
        raise ProtonUnfit(f"python-qpid-proton {_version()} decodes differently than "
                          f"bridged expects ({decoded!r}); install a version bridged supports: "
                          "pip install 'bridged[amqp10]'")  # fmt: skip


_check()
