"""The oslo format: the json record with the oslo.messaging envelope unwrapped into it."""

from __future__ import annotations

from bridged.delivery import Delivery
from bridged.formats.jsonline import RECORD_KEYS, RecordPrefix, properties, record
from bridged.formats.jsontext import check_json, dump, quote, splice_safe
from bridged.formats.masking import redact_body, redact_or_mark, redacted_text
from bridged.formats.notification import unwrap_oslo
from bridged.formats.text import LineFormatter
from bridged.redact import Redactor


def make_oslo(binding: str, redactor: Redactor | None = None) -> LineFormatter:
    prefix = RecordPrefix(binding, redactor)

    def format_oslo(delivery: Delivery) -> bytes:
        body = delivery.body
        if type(body) is bytes and body.isascii():
            spliced = _splice_oslo(delivery, body, prefix, redactor)
            if spliced is not None:
                return spliced
        rec = record(delivery, binding)  # unredacted: the message is unwrapped first, then masked
        message = unwrap_oslo(rec["body"])
        if redactor is not None:
            rec["properties"] = properties(delivery.properties, redactor)
            if message is None:
                rec["body"] = redact_body(rec["body"], redactor)
            else:
                masked = redact_or_mark(message, redactor)
                message = masked if isinstance(masked, dict) else {"body": masked}
        if message is not None:
            del rec["body"]
            for key, val in message.items():
                rec[f"message.{key}" if key in RECORD_KEYS else key] = val
        return dump(rec)

    return format_oslo


# oslo.messaging's envelope keys (compared with a dict's keys view: no set built per message).
OSLO_ENVELOPE = frozenset(("oslo.version", "oslo.message"))


def _splice_oslo(delivery: Delivery, body: bytes, prefix: RecordPrefix, redactor: Redactor | None) -> bytes | None:
    """The common oslo 2.0 envelope, unwrapped by copying the inner JSON text after the record's fields."""
    try:
        outer = check_json(body)
    except ValueError:
        return None
    if type(outer) is not dict or outer.keys() != OSLO_ENVELOPE:
        return None
    inner_text, version = outer["oslo.message"], outer["oslo.version"]
    if type(inner_text) is not str or type(version) is not str or not splice_safe(inner_text):
        return None
    try:
        inner = check_json(inner_text)
    except ValueError:
        return None
    if type(inner) is not dict or not inner or not RECORD_KEYS.isdisjoint(inner) or "oslo.version" in inner:
        return None
    delivery.note = inner  # parsed once: filters and sinks read it from the delivery
    if redactor is not None and redactor.needs(inner):
        rewritten = redacted_text(inner, redactor, None)
        if rewritten is None:
            return None
        inner_text = rewritten.decode("ascii")
    inner_text = inner_text.strip()  # the same str when there is nothing to strip: no copy
    return f'{prefix(delivery)},"oslo.version":{quote(version)},{inner_text[1:]}'.encode("ascii")
