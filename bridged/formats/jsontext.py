"""JSON in and out for the line formats: strict parsing, one ASCII line out, whatever the value holds."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any

from bridged.formats.text import body_text, escape_text

fast_loads: Callable[[str | bytes], Any] | None
fast_dumps: Callable[[Any], bytes] | None
try:  # orjson parses ~3x faster than json: it checks and unwraps bodies, and re-encodes a redacted one
    from orjson import dumps as fast_dumps
    from orjson import loads as fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
    fast_loads = fast_dumps = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | bytes) -> Any:
    """Parse strict JSON, or raise ValueError (also for NaN, depth, huge ints)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# Parse strict JSON fast, for validation and unwrapping; raises ValueError. The parser itself, not a
# wrapper around it: the formats call it once or twice for every message.
check_json: Callable[[str | bytes], Any] = parse_json if fast_loads is None else fast_loads


def splice_safe(text: bytes | str) -> bool:
    """Valid JSON that is ASCII and has no line break, tab or DEL can be copied into a line as is.

    (The parser has already refused raw control characters inside strings;
    only whitespace between tokens can remain, and that is checked here.)
    """
    if isinstance(text, bytes):
        # int needles: CPython finds a byte with memchr, a one-byte bytes needle takes its slow search (8x)
        return text.isascii() and 10 not in text and 13 not in text and 9 not in text and 127 not in text
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
        return check_json(text), None  # the parser of the fast paths: the same body gives the same record
    except ValueError:
        return text, None


def jsonable(value: Any) -> Any:
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


# allow_nan=False: a NaN or infinity (a float header) fails the encode and takes dump()'s fallback,
# never writing the Infinity or NaN that no JSON parser reads.
ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=jsonable, allow_nan=False)


def escape_del(json_text: str) -> str:
    """The JSON encoder escapes every control character but DEL; escape that too."""
    return json_text.replace("\x7f", "\\u007f") if "\x7f" in json_text else json_text


def ascii_line(text: str) -> bytes:
    return escape_del(text).encode("ascii")


def quote(text: str) -> str:
    """*text* as a JSON string literal, ASCII only."""
    return escape_del(_encode_string(text))


def dump(rec: dict[str, Any]) -> bytes:
    """Serialise a record as one ASCII JSON line; never raises for odd values."""
    try:
        return ascii_line(ENCODER.encode(rec))
    except (ValueError, RecursionError, TypeError):
        # Too deep for the encoder, or a surprising type in a header table.
        safe = {k: v for k, v in rec.items() if k not in ("body", "properties")}
        safe["properties"] = {k: jsonable(v) if isinstance(v, dict | list) else v
                              for k, v in rec.get("properties", {}).items()}  # fmt: skip
        safe["body"] = escape_text(repr(rec.get("body")))
        safe["body_encoding"] = "repr"
        try:
            return ascii_line(ENCODER.encode(safe))
        except (ValueError, RecursionError, TypeError):
            safe["properties"] = escape_text(repr(rec.get("properties")))
            return ascii_line(ENCODER.encode(safe))
