"""The AMQP 1.0 message format read without proton: is a delivery whole, and what is in one proton refuses.

qpid-proton decodes garbage leniently (an empty message: the content would
be gone without a trace) and raises on legal-but-odd content (text that is
not UTF-8, a map key that is a list). A delivery's sections are first walked
by their sizes alone (cheap: no value is decoded) to tell an AMQP message
from garbage or a truncated one; a message proton cannot turn into Python
values is decoded here instead, leniently: text that is not UTF-8 keeps its
bytes as escapes, a key that cannot be a dict key becomes its JSON text.
The section and type codes are those of the AMQP 1.0 specification, part 1
(types) and part 3 (messaging).
"""

from __future__ import annotations

import json
import struct
from typing import Any

# Section descriptors (part 3, 3.2): header .. footer.
SECTIONS = range(0x70, 0x79)
HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES, APPLICATION_PROPERTIES = 0x70, 0x71, 0x72, 0x73, 0x74
DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER = 0x75, 0x76, 0x77, 0x78
# Deeper than any real message: a hostile one nested further is refused, not walked.
MAX_DEPTH = 100

# constructor -> width of a fixed-width value (part 1, 1.6)
_FIXED = {0x40: 0, 0x41: 0, 0x42: 0, 0x43: 0, 0x44: 0, 0x45: 0,
          0x50: 1, 0x51: 1, 0x52: 1, 0x53: 1, 0x54: 1, 0x55: 1, 0x56: 1, 0x60: 2, 0x61: 2,
          0x70: 4, 0x71: 4, 0x72: 4, 0x73: 4, 0x74: 4, 0x80: 8, 0x81: 8, 0x82: 8, 0x83: 8, 0x84: 8,
          0x94: 16, 0x98: 16}  # fmt: skip
_SIZE1 = (0xA0, 0xA1, 0xA3, 0xC0, 0xC1, 0xE0)  # a one-byte size follows the constructor
_SIZE4 = (0xB0, 0xB1, 0xB3, 0xD0, 0xD1, 0xF0)  # a four-byte size


class Malformed(ValueError):
    """Bytes that are not an AMQP 1.0 message."""


def _skip(data: bytes, pos: int, depth: int = 0) -> int:
    """The position after the value at *pos*, by its constructor and size alone."""
    if depth > MAX_DEPTH:
        raise Malformed("nested too deeply")
    try:
        code = data[pos]
    except IndexError:
        raise Malformed("truncated") from None
    pos += 1
    if code == 0x00:  # described: the descriptor, then the value
        return _skip(data, _skip(data, pos, depth + 1), depth + 1)
    width = _FIXED.get(code)
    if width is not None:
        end = pos + width
    elif code in _SIZE1:
        if pos >= len(data):
            raise Malformed("truncated")
        end = pos + 1 + data[pos]
    elif code in _SIZE4:
        if pos + 4 > len(data):
            raise Malformed("truncated")
        end = pos + 4 + struct.unpack_from(">I", data, pos)[0]
    else:
        raise Malformed(f"unknown type code 0x{code:02x}")
    if end > len(data):
        raise Malformed("truncated")
    return end


_SIZE1_SET = frozenset(_SIZE1)
_SIZE4_SET = frozenset(_SIZE4)


def check_sections(data: bytes) -> str | None:
    """Why *data* is not a whole AMQP 1.0 message (garbage, truncated, not sections), or None.

    On every delivery (the hot path): the common section, `00 53 code` and a
    sized value, is stepped over inline; anything else by _skip.
    """
    pos, size = 0, len(data)
    if not size:
        return "empty"
    try:
        while pos < size:
            if data[pos] != 0x00:
                return f"not an AMQP 1.0 message section at byte {pos}"
            if data[pos + 1] == 0x53 and data[pos + 2] in SECTIONS:
                constructor = data[pos + 3]
                if constructor in _SIZE1_SET:
                    end = pos + 5 + data[pos + 4]
                elif constructor in _SIZE4_SET:
                    end = pos + 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
                else:
                    end = _skip(data, pos + 3)
                if end > size:
                    return f"truncated at byte {pos}"
                pos = end
                continue
            if _descriptor(data, pos + 1) not in SECTIONS:
                return f"unknown section at byte {pos}"
            pos = _skip(data, pos)
    except (Malformed, IndexError) as exc:
        return f"{exc or 'truncated'} at byte {pos}"
    return None


# Sections may be described by symbol too (part 3, 3.2).
_SYMBOLIC = {b"amqp:header:list": HEADER, b"amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
             b"amqp:message-annotations:map": MESSAGE_ANNOTATIONS, b"amqp:properties:list": PROPERTIES,
             b"amqp:application-properties:map": APPLICATION_PROPERTIES, b"amqp:data:binary": DATA,
             b"amqp:amqp-sequence:list": AMQP_SEQUENCE, b"amqp:amqp-value:*": AMQP_VALUE,
             b"amqp:footer:map": FOOTER}  # fmt: skip


def _descriptor(data: bytes, pos: int) -> int | None:
    """A section's descriptor code (smallulong, ulong or its symbol), None for anything else."""
    code = data[pos] if pos < len(data) else None
    if code == 0x53 and pos + 1 < len(data):
        return data[pos + 1]
    if code == 0x80 and pos + 8 < len(data):
        value: int = struct.unpack_from(">Q", data, pos + 1)[0]
        return value if value < 0x100 else None
    if code == 0xA3 and pos + 1 < len(data):
        return _SYMBOLIC.get(bytes(data[pos + 2 : pos + 2 + data[pos + 1]]))
    return None


def acquired_before(data: bytes) -> bool:
    """True when the message's header says first-acquirer: false in so many bytes.

    The field's default is false, so proton's getter says false for a header without it too; Artemis and
    Qpid send none, RabbitMQ sends true and, on a redelivery, false: only a false that is written means
    "delivered before". Only the header's first fields are looked at."""
    try:
        if data[0] != 0x00 or _descriptor(data, 1) != HEADER:
            return False
        pos = _skip(data, 1)  # the descriptor
        code = data[pos]
        if code == 0xC0:
            count, pos = data[pos + 2], pos + 3
        elif code == 0xD0:
            count, pos = struct.unpack_from(">I", data, pos + 5)[0], pos + 9
        else:
            return False  # list0, or not a list
        if count < 4:
            return False
        for _ in range(3):  # durable, priority, ttl
            pos = _skip(data, pos)
        return data[pos] == 0x42 or (data[pos] == 0x56 and data[pos + 1] == 0)
    except (Malformed, IndexError, struct.error):
        return False


class _Reader:
    """Decodes values leniently: what does not fit a Python type is kept as text and noted in `problems`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.problems: list[str] = []

    def value(self, pos: int, depth: int = 0) -> tuple[Any, int]:
        if depth > MAX_DEPTH:
            raise Malformed("nested too deeply")
        data = self.data
        code = data[pos]
        pos += 1
        if code == 0x00:
            _, pos = self.value(pos, depth + 1)  # the descriptor of a described value is not kept
            return self.value(pos, depth + 1)
        if code in _FIXED:
            end = pos + _FIXED[code]
            return self._fixed(code, data[pos:end]), end
        size_width = 1 if code in _SIZE1 else 4 if code in _SIZE4 else None
        if size_width is None:
            raise Malformed(f"unknown type code 0x{code:02x}")
        size = data[pos] if size_width == 1 else struct.unpack_from(">I", data, pos)[0]
        start, end = pos + size_width, pos + size_width + size
        if code in (0xA0, 0xB0):
            return bytes(data[start:end]), end
        if code in (0xA1, 0xB1, 0xA3, 0xB3):
            return self.text(data[start:end], "a symbol" if code in (0xA3, 0xB3) else "a string"), end
        count = data[start] if size_width == 1 else struct.unpack_from(">I", data, start)[0]
        pos = start + size_width
        if code in (0xE0, 0xF0):
            return self._array(pos, count, depth), end
        items = []
        for _ in range(count):
            item, pos = self.value(pos, depth + 1)
            items.append(item)
        if code in (0xC0, 0xD0):
            return items, end
        return self._map(items), end

    def _array(self, pos: int, count: int, depth: int) -> list[Any]:
        """count values sharing one constructor (possibly described)."""
        constructor_start = pos
        pos = _skip_constructor(self.data, pos)
        constructor = self.data[constructor_start:pos]
        items = []
        for _ in range(count):
            element = constructor + self.data[pos:]
            reader = _Reader(element)
            item, used = reader.value(0, depth + 1)
            self.problems.extend(reader.problems)
            items.append(item)
            pos += used - len(constructor)
        return items

    def _map(self, items: list[Any]) -> dict[str, Any] | dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, item in zip(items[::2], items[1::2], strict=False):
            try:
                hash(key)
            except TypeError:
                self.problems.append("a map key that is a list or a map")
                key = json.dumps(key, default=str, ensure_ascii=False)
            out[key] = item
        return out

    def text(self, raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8", "surrogatepass")  # as py-amqp reads AMQP 0-9-1 text
        except UnicodeDecodeError:
            self.problems.append(f"{what} that is not UTF-8")
            return raw.decode("utf-8", "backslashreplace")

    @staticmethod
    def _fixed(code: int, raw: bytes) -> Any:
        if code in (0x40,):
            return None
        if code in (0x41, 0x42):
            return code == 0x41
        if code in (0x43, 0x44):
            return 0
        if code == 0x45:
            return []
        if code == 0x56:
            return raw != b"\x00"
        formats = {0x50: ">B", 0x51: ">b", 0x52: ">B", 0x53: ">B", 0x54: ">b", 0x55: ">b", 0x60: ">H",
                   0x61: ">h", 0x70: ">I", 0x71: ">i", 0x72: ">f", 0x80: ">Q", 0x81: ">q", 0x82: ">d",
                   0x83: ">q", 0x73: ">I"}  # fmt: skip
        fmt = formats.get(code)
        if fmt is not None:
            return struct.unpack(fmt, raw)[0]
        return raw.hex()  # decimals and uuids, as text


def _skip_constructor(data: bytes, pos: int) -> int:
    """Past an array's element constructor (a type code, or 0x00 descriptor code)."""
    if data[pos] == 0x00:
        return _skip_constructor(data, _skip(data, pos + 1))
    return pos + 1


# The AMQP 1.0 properties section's fields, in order (part 3, 3.2.4), as the 0-9-1 names where they exist.
_PROPERTY_FIELDS = ("message_id", "user_id", None, "subject", "reply_to", "correlation_id", "content_type",
                    "content_encoding", None, "creation_time")  # fmt: skip


def lenient_decode(data: bytes) -> tuple[dict[str, Any], str, str, bool, bytes, list[str]]:
    """(properties, exchange, routing key, redelivered, body, problems) of a whole message, never raising
    for content (Malformed for a broken structure): the fields as protonio.decode_message gives them."""
    reader = _Reader(data)
    properties: dict[str, Any] = {}
    headers: dict[Any, Any] | None = None
    annotations: dict[Any, Any] = {}
    body_parts: list[bytes] = []
    body_value: Any = None
    subject, count, first_acquirer = "", 0, True
    pos = 0
    while pos < len(data):
        code = _descriptor(data, pos + 1)
        start = pos
        value, pos = reader.value(pos)
        if code == HEADER and isinstance(value, list):
            fields = [*value, None, None, None, None, None]
            if fields[0]:
                properties["delivery_mode"] = 2
            first_acquirer = fields[3] is not False
            count = fields[4] if isinstance(fields[4], int) else 0
        elif code == MESSAGE_ANNOTATIONS and isinstance(value, dict):
            annotations = value
        elif code == PROPERTIES and isinstance(value, list):
            for name, field in zip(_PROPERTY_FIELDS, value, strict=False):
                if name is None or field is None or field == "":
                    continue
                if name == "subject":
                    subject = str(field)
                elif name == "creation_time":
                    properties["timestamp"] = int(field) // 1000
                else:
                    properties[name] = field if isinstance(field, str) else text_of(field)
        elif code == APPLICATION_PROPERTIES and isinstance(value, dict):
            headers = value
        elif code == DATA and isinstance(value, bytes):
            body_parts.append(value)
        elif code in (AMQP_VALUE, AMQP_SEQUENCE):
            body_value = _raw_text(data, start) if code == AMQP_VALUE else None
            if body_value is None:
                body_value = value
    if count:
        headers = {**(headers or {}), "x-delivery-count": count}
    if headers:
        properties["application_headers"] = headers
    exchange = text_of(annotations.get("x-opt-exchange-name") or "")
    routing_key = text_of(annotations.get("x-opt-routing-key") or subject or "")
    if body_parts:
        body = b"".join(body_parts)
    elif isinstance(body_value, str):
        body = body_value.encode("utf-8", "surrogateescape")
    elif isinstance(body_value, bytes):
        body = body_value
    elif body_value is None:
        body = b""
    else:
        body = json.dumps(body_value, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return properties, exchange, routing_key, bool(count) or not first_acquirer, body, reader.problems


def _raw_text(data: bytes, section: int) -> bytes | None:
    """An amqp-value section holding a string: its bytes as sent (text that is not UTF-8 keeps every byte)."""
    pos = _skip(data, section + 1)  # past the descriptor
    code = data[pos]
    if code == 0xA1:
        return bytes(data[pos + 2 : pos + 2 + data[pos + 1]])
    if code == 0xB1:
        size = struct.unpack_from(">I", data, pos + 1)[0]
        return bytes(data[pos + 5 : pos + 5 + size])
    return None


def text_of(value: Any) -> str:
    """A decoded AMQP value as text: str as it is, bytes decoded (bad UTF-8 replaced), anything else str()."""
    return (
        value
        if isinstance(value, str)
        else value.decode("utf-8", "replace")
        if isinstance(value, bytes)
        else str(value)
    )
