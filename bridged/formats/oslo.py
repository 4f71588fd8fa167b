"""The oslo format: the json record with the oslo.messaging envelope unwrapped into it."""

from __future__ import annotations

from bridged.delivery import Delivery
from bridged.formats.jsonline import RECORD_KEYS, RecordPrefix, properties, record
from bridged.formats.jsontext import dump, loads, quote, splice_safe
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


# oslo.messaging's envelope keys, and its versions quoted (one value in practice: "2.0"); a hostile
# publisher may send a new version each time, so only the first few are remembered.
OSLO_ENVELOPE = frozenset(("oslo.version", "oslo.message"))
MAX_QUOTED_VERSIONS = 16
_quoted_versions: dict[str, str] = {}


def _splice_oslo(delivery: Delivery, body: bytes, prefix: RecordPrefix, redactor: Redactor | None) -> bytes | None:
    """The common oslo 2.0 envelope, unwrapped by copying the inner JSON text after the record's fields."""
    try:
        outer = loads(body)
    except ValueError:
        return None
    if type(outer) is not dict or outer.keys() != OSLO_ENVELOPE:
        return None
    inner_text, version = outer["oslo.message"], outer["oslo.version"]
    if type(inner_text) is not str or type(version) is not str or not splice_safe(inner_text):
        return None
    try:
        inner = loads(inner_text)
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
    elif inner_text[0] != "{" or inner_text[-1] != "}":
        inner_text = inner_text.strip()  # whitespace around the object (splice_safe: only spaces)
    quoted = _quoted_versions.get(version)
    if quoted is None:
        quoted = quote(version)
        if len(_quoted_versions) < MAX_QUOTED_VERSIONS:
            _quoted_versions[version] = quoted
    return f'{prefix(delivery)},"oslo.version":{quoted},{inner_text[1:]}'.encode("ascii")
