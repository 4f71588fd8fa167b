"""Message -> one log line (raw, json, oslo, template). Pure functions, hot path.

No body can forge a second line or a terminal sequence: every control
character is escaped. Nothing in a template is ever evaluated.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import decimal
import json
import re
import string
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any, NamedTuple, Protocol

from bridged.redact import REDACTED, Redactor

FORMAT_NAMES = ("raw", "json", "oslo")


class Delivery(Protocol):
    """What a formatter reads: the shape of py-amqp's ``amqp.Message``."""

    body: bytes | str
    delivery_info: Mapping[str, Any]
    properties: Mapping[str, Any]


LineFormatter = Callable[[Delivery], bytes]


class TemplateError(ValueError):
    """A template names an unknown field or uses anything but plain {field}."""


# C0, DEL, C1, the Unicode line/paragraph separators and bidi controls:
# each could end a line or rewrite what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(text: str) -> str:
    """Escape control characters so *text* stays one harmless line."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_char, text)


def body_text(body: bytes | str) -> str:
    """The body as text: invalid UTF-8 bytes become \\xNN."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8", "backslashreplace")
    return str(body)


# 1 for bytes 0x20-0x7e, 0 for the rest: one translate(2) pass and one memchr
# check a body (0.75 us for 600 bytes, against 2.7 us for decode+isprintable
# and 7 us for a regex character class).
_PRINTABLE_ASCII = bytes(1 if 0x20 <= i < 0x7F else 0 for i in range(256))


def is_printable_ascii(data: bytes) -> bool:
    """No byte outside 0x20-0x7e: the common case, checked in C."""
    return b"\x00" not in data.translate(_PRINTABLE_ASCII)


def format_raw(delivery: Delivery) -> bytes:
    """The body itself, escaped; plain printable ASCII passes untouched."""
    body = delivery.body
    if type(body) is bytes and is_printable_ascii(body):
        return body
    return escape_text(body_text(body)).encode("utf-8", "backslashreplace")


_second_cache: tuple[int, str] = (0, "")
_milli_cache: tuple[int, str] = (0, "")


def utc_now() -> str:
    """Current UTC time, ISO 8601 with milliseconds; cached per millisecond and per second."""
    global _second_cache, _milli_cache
    now = time.time()
    milli = int(now * 1000)
    if _milli_cache[0] == milli:
        return _milli_cache[1]
    second = milli // 1000
    cached = _second_cache
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _second_cache = cached
    text = f"{cached[1]}.{milli % 1000:03d}Z"
    _milli_cache = (milli, text)
    return text


_fast_loads: Callable[[str | bytes], Any] | None
_fast_dumps: Callable[[Any], bytes] | None
try:  # orjson parses ~3x faster than json: it checks and unwraps bodies, and re-encodes a redacted one
    from orjson import dumps as _fast_dumps
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    _fast_loads = _fast_dumps = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | bytes) -> Any:
    """Parse strict JSON, or raise ValueError (also for NaN, depth, huge ints)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def check_json(text: str | bytes) -> Any:
    """Parse strict JSON fast, for validation and unwrapping; raises ValueError."""
    if _fast_loads is None:
        return parse_json(text)
    return _fast_loads(text)


def _splice_safe(text: bytes | str) -> bool:
    """Valid JSON that is ASCII and has no line break, tab or DEL can be copied into a line as is.

    (The parser has already refused raw control characters inside strings;
    only whitespace between tokens can remain, and that is checked here.)
    """
    if isinstance(text, bytes):
        return text.isascii() and b"\n" not in text and b"\r" not in text and b"\t" not in text and b"\x7f" not in text
    return text.isascii() and "\n" not in text and "\r" not in text and "\t" not in text and "\x7f" not in text


def body_value(body: bytes | str) -> tuple[Any, str | None]:
    """The body as a JSON value, its text, or base64 for binary; plus its encoding mark."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(body).decode("ascii"), "base64"
    else:
        text = body
    try:
        return parse_json(text), None
    except ValueError:
        return text, None


def _jsonable(value: Any) -> Any:
    """json.dumps fallback for what AMQP tables carry besides JSON types."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return body_text(bytes(value))
    if isinstance(value, decimal.Decimal):
        return str(value)
    return repr(value)


_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=_jsonable)


def _properties(properties: Mapping[str, Any], redactor: Redactor | None) -> dict[str, Any]:
    """AMQP properties as set; py-amqp calls the headers table application_headers."""
    props = dict(properties)
    if "application_headers" in props:
        headers = _text_keys(props.pop("application_headers"))
        if redactor is not None and redactor.needs(headers):
            headers = _redact_or_mark(headers, redactor)
        props["headers"] = headers
    return props


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


def _envelope_inner(value: Any) -> Any:
    """The parsed inner message of an oslo 2.0 envelope, or None."""
    if type(value) is dict:
        inner = value.get("oslo.message")
        if type(inner) is str:
            try:
                return check_json(inner)
            except ValueError:
                return None
    return None


def body_needs_redaction(value: Any, redactor: Redactor, inner: Any) -> bool:
    """Whether a parsed body or *inner*, the message inside its oslo envelope, holds a live secret."""
    return redactor.needs(value) if inner is None else (redactor.needs(inner) or redactor.needs(value))


def redact_body(value: Any, redactor: Redactor, encode: Callable[[Any], Any] | None = None, inner: Any = None) -> Any:
    """*value* with secrets masked, inside an oslo envelope's JSON string too (*inner*: already parsed)."""
    if inner is None:
        inner = _envelope_inner(value)
    if inner is not None and redactor.needs(inner):
        value = dict(value)
        masked = _redact_or_mark(inner, redactor)
        value["oslo.message"] = _ENCODER.encode(masked) if encode is None else encode(masked).decode()
    return _redact_or_mark(value, redactor)


def redacted_text(value: Any, redactor: Redactor, inner: Any) -> bytes | None:
    """*value* redacted (inside an oslo envelope too) as compact JSON that can be spliced as is, or None.

    The fast way to rewrite a body with a live secret: orjson encodes the
    masked copy, and the result is used only when it is plain ASCII on one line.
    """
    if _fast_dumps is None:
        return None
    try:
        text = _fast_dumps(redact_body(value, redactor, _fast_dumps, inner))
    except (TypeError, ValueError):
        return None
    return text if _splice_safe(text) else None


def _redact_or_mark(value: Any, redactor: Redactor) -> Any:
    try:
        return redactor.redact(value)
    except ValueError:  # too deep to walk: nothing of it is written
        return f"{REDACTED} (nested too deeply to inspect)"


def record(delivery: Delivery, binding: str, redactor: Redactor | None = None) -> dict[str, Any]:
    """The json format's fields for *delivery*."""
    info = delivery.delivery_info
    value, encoding = body_value(delivery.body)
    if redactor is not None and encoding is None:
        value = redact_body(value, redactor)
    rec: dict[str, Any] = {
        "binding": binding,
        "exchange": info.get("exchange", ""),
        "routing_key": info.get("routing_key", ""),
        "redelivered": bool(info.get("redelivered", False)),
        "received_at": utc_now(),
        "properties": _properties(delivery.properties, redactor),
        "body": value,
    }
    if encoding:
        rec["body_encoding"] = encoding
    return rec


def dump(rec: dict[str, Any]) -> bytes:
    """Serialise a record as one ASCII JSON line; never raises for odd values."""
    try:
        return _ascii_line(_ENCODER.encode(rec))
    except (ValueError, RecursionError, TypeError):
        # Too deep for the encoder, or a surprising type in a header table.
        safe = {k: v for k, v in rec.items() if k not in ("body", "properties")}
        safe["properties"] = {k: _jsonable(v) if isinstance(v, dict | list) else v
                              for k, v in rec.get("properties", {}).items()}  # fmt: skip
        safe["body"] = escape_text(repr(rec.get("body")))
        safe["body_encoding"] = "repr"
        try:
            return _ascii_line(_ENCODER.encode(safe))
        except (ValueError, RecursionError, TypeError):
            safe["properties"] = escape_text(repr(rec.get("properties")))
            return _ascii_line(_ENCODER.encode(safe))


def _escape_del(json_text: str) -> str:
    """The JSON encoder escapes every control character but DEL; escape that too."""
    return json_text.replace("\x7f", "\\u007f") if "\x7f" in json_text else json_text


def _ascii_line(text: str) -> bytes:
    return _escape_del(text).encode("ascii")


# Record keys that an unwrapped oslo message may not overwrite.
_RECORD_KEYS = frozenset(("binding", "exchange", "routing_key", "redelivered", "received_at", "properties"))


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


def _prefix(delivery: Delivery, binding_json: str, redactor: Redactor | None) -> str:
    """The json record up to (not including) the body, built as text: no dict, no encoder pass."""
    info = delivery.delivery_info
    props = delivery.properties
    return (
        f'{{"binding":{binding_json},"exchange":{_quote(str(info.get("exchange", "")))},'
        f'"routing_key":{_quote(str(info.get("routing_key", "")))},'
        f'"redelivered":{"true" if info.get("redelivered") else "false"},"received_at":"{utc_now()}",'
        f'"properties":'
        f"{_PLAIN_PROPERTIES_JSON if props == _PLAIN_PROPERTIES else dump(_properties(props, redactor)).decode()}"
    )


# What most publishers set: a persistent message and nothing else.
_PLAIN_PROPERTIES = {"delivery_mode": 2}
_PLAIN_PROPERTIES_JSON = '{"delivery_mode":2}'


def _quote(text: str) -> str:
    return _escape_del(_encode_string(text))


def make_json(binding: str, redactor: Redactor | None = None) -> LineFormatter:
    binding_json = _quote(binding)

    def format_json(delivery: Delivery) -> bytes:
        body = delivery.body
        if type(body) is bytes and _splice_safe(body):
            try:
                value = check_json(body)
            except ValueError:
                text = _quote(body.decode("ascii"))
                return f'{_prefix(delivery, binding_json, redactor)},"body":{text}}}'.encode("ascii")
            inner = _envelope_inner(value) if redactor is not None else None
            if redactor is not None and body_needs_redaction(value, redactor, inner):
                body = redacted_text(value, redactor, inner)  # type: ignore[assignment]
                if body is None:
                    return dump(record(delivery, binding, redactor))
            return b"".join((_prefix(delivery, binding_json, redactor).encode("ascii"), b',"body":', body, b"}"))
        return dump(record(delivery, binding, redactor))

    return format_json


def make_oslo(binding: str, redactor: Redactor | None = None) -> LineFormatter:
    binding_json = _quote(binding)

    def format_oslo(delivery: Delivery) -> bytes:
        body = delivery.body
        if type(body) is bytes and body.isascii():
            spliced = _splice_oslo(delivery, body, binding_json, redactor)
            if spliced is not None:
                return spliced
        rec = record(delivery, binding)  # unredacted: the message is unwrapped first, then masked
        message = unwrap_oslo(rec["body"])
        if redactor is not None:
            rec["properties"] = _properties(delivery.properties, redactor)
            if message is None:
                rec["body"] = redact_body(rec["body"], redactor)
            else:
                masked = _redact_or_mark(message, redactor)
                message = masked if isinstance(masked, dict) else {"body": masked}
        if message is not None:
            del rec["body"]
            for key, val in message.items():
                rec[f"message.{key}" if key in _RECORD_KEYS else key] = val
        return dump(rec)

    return format_oslo


def _splice_oslo(delivery: Delivery, body: bytes, binding_json: str, redactor: Redactor | None) -> bytes | None:
    """The common oslo 2.0 envelope, unwrapped by copying the inner JSON text after the record's fields."""
    try:
        outer = check_json(body)
    except ValueError:
        return None
    if not isinstance(outer, dict) or set(outer) != {"oslo.version", "oslo.message"}:
        return None
    inner_text, version = outer["oslo.message"], outer["oslo.version"]
    if not isinstance(inner_text, str) or not isinstance(version, str) or not _splice_safe(inner_text):
        return None
    try:
        inner = check_json(inner_text)
    except ValueError:
        return None
    if not isinstance(inner, dict) or not inner or not _RECORD_KEYS.isdisjoint(inner) or "oslo.version" in inner:
        return None
    with contextlib.suppress(AttributeError):  # a delivery without a __dict__ just parses again later
        delivery.parsed_notification = inner  # type: ignore[attr-defined]
    if redactor is not None and redactor.needs(inner):
        rewritten = redacted_text(inner, redactor, None)
        if rewritten is None:
            return None
        inner_text = rewritten.decode("ascii")
    inner_text = inner_text.strip()
    prefix = _prefix(delivery, binding_json, redactor)
    return f'{prefix},"oslo.version":{_quote(version)},{inner_text[1:]}'.encode("ascii")


def notification(delivery: Delivery) -> dict[str, Any] | None:
    """The oslo notification (or RPC message) carried by *delivery*, or None.

    The oslo format parses it anyway and leaves it on the delivery
    (``parsed_notification``): a syslog sink or a path template then reads it
    without parsing the body a second time.
    """
    parsed = getattr(delivery, "parsed_notification", None)
    if parsed is not None:
        return parsed  # type: ignore[no-any-return]
    body = delivery.body
    try:
        value = check_json(body) if type(body) is bytes else body_value(body)[0]
    except ValueError:
        return None
    message = unwrap_oslo(value)
    if message is not None:
        with contextlib.suppress(AttributeError):
            delivery.parsed_notification = message  # type: ignore[attr-defined]
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
    info = delivery.delivery_info
    message = notification(delivery) or {}
    priority, event_type, publisher = message.get("priority"), message.get("event_type"), message.get("publisher_id")
    return LineMeta(
        priority if type(priority) is str else None,
        event_type if type(event_type) is str else None,
        publisher if type(publisher) is str else None,
        str(info.get("routing_key", "")),
        str(info.get("exchange", "")),
        binding,
    )


def _text(value: Any) -> str:
    """A field value as text: JSON for objects and lists, ISO 8601 for times."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        try:
            return _ENCODER.encode(value)
        except (ValueError, RecursionError, TypeError):
            return repr(value)
    if isinstance(value, datetime.datetime | bytes):
        return str(_jsonable(value))
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
                redacted = _redact_or_mark(message, self.redactor)
                message = redacted if isinstance(redacted, dict) else {}
            self._note = message
        return self._note

    def body(self) -> str:
        body = self.delivery.body
        redactor = self.redactor
        if redactor is not None:
            value, encoding = body_value(body)
            if encoding is None and isinstance(value, dict | list):
                inner = _envelope_inner(value)
                if body_needs_redaction(value, redactor, inner):
                    return _text(redact_body(value, redactor, inner=inner))
        return body_text(body)


FieldGetter = Callable[[_Message], str]


def _amqp_property(name: str) -> FieldGetter:
    key = "application_headers" if name == "headers" else name

    def get(message: _Message) -> str:
        value = message.delivery.properties.get(key)
        if key == "application_headers" and message.redactor is not None and message.redactor.needs(value):
            value = _redact_or_mark(value, message.redactor)
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
    "exchange": lambda m: str(m.delivery.delivery_info.get("exchange", "")),
    "routing_key": lambda m: str(m.delivery.delivery_info.get("routing_key", "")),
    "redelivered": lambda m: "true" if m.delivery.delivery_info.get("redelivered") else "false",
    "delivery_tag": lambda m: str(m.delivery.delivery_info.get("delivery_tag", "")),
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


def make_formatter(fmt: str, binding: str, redactor: Redactor | None = None) -> LineFormatter:
    """The line formatter for a binding's ``format`` setting (*redactor*: None when redaction is off)."""
    if fmt == "raw":
        return format_raw
    if fmt == "json":
        return make_json(binding, redactor)
    if fmt == "oslo":
        return make_oslo(binding, redactor)
    return make_template(fmt, binding, redactor)


def safe_line(delivery: Delivery, error: BaseException, fmt: str = "raw", binding: str = "") -> bytes:
    """Last resort when a formatter failed: the raw escaped body, marked (a JSON record for json and oslo)."""
    reason = escape_text(type(error).__name__)
    if fmt in ("json", "oslo"):
        record = {"binding": binding, "received_at": utc_now(), "bridged_error": f"format failed: {reason}",
                  "body": format_raw(delivery).decode("utf-8", "backslashreplace")}  # fmt: skip
        return _ascii_line(_ENCODER.encode(record))
    return b"[bridged: format failed: " + reason.encode() + b"] " + format_raw(delivery)
