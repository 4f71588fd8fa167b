"""Delivery -> one log line: raw, json, oslo or a template. Pure functions on the hot path.

One module per job: text.py (escaping, raw), jsontext.py (JSON in and out),
notification.py (the oslo notification in a body), masking.py (secrets),
jsonline.py (json), oslo.py (oslo), template.py (templates). This module
picks a formatter by name and writes the marked line when one fails.
"""

from __future__ import annotations

from bridged.delivery import Delivery
from bridged.formats.jsonline import make_json
from bridged.formats.jsontext import ENCODER, ascii_line
from bridged.formats.notification import LineMeta, notification, notification_meta, unwrap_oslo
from bridged.formats.oslo import make_oslo
from bridged.formats.template import TEMPLATE_FIELDS, TemplateError, compile_template, make_template
from bridged.formats.text import LineFormatter, escape_text, format_raw, utc_now
from bridged.redact import Redactor

__all__ = [
    "FORMAT_NAMES", "TEMPLATE_FIELDS", "LineFormatter", "LineMeta", "TemplateError", "compile_template",
    "escape_text", "format_raw", "make_formatter", "marked_line", "notification", "notification_meta",
    "safe_line", "unwrap_oslo", "utc_now",
]  # fmt: skip

FORMAT_NAMES = ("raw", "json", "oslo")


def make_formatter(fmt: str, binding: str, redactor: Redactor | None = None) -> LineFormatter:
    """The line formatter for a binding's ``format`` setting (*redactor*: None when redaction is off)."""
    if fmt == "raw":
        return format_raw
    if fmt == "json":
        return make_json(binding, redactor)
    if fmt == "oslo":
        return make_oslo(binding, redactor)
    return make_template(fmt, binding, redactor)


def marked_line(delivery: Delivery, why: str, fmt: str = "raw", binding: str = "") -> bytes:
    """The body as it came (escaped), marked with *why* it could not be formatted (json, oslo: a JSON record)."""
    why = escape_text(why)
    if fmt in ("json", "oslo"):
        record = {"binding": binding, "received_at": utc_now(), "bridged_error": why,
                  "body": format_raw(delivery).decode("utf-8", "backslashreplace")}  # fmt: skip
        return ascii_line(ENCODER.encode(record))
    return b"[bridged: " + why.encode("utf-8", "backslashreplace") + b"] " + format_raw(delivery)


def safe_line(delivery: Delivery, error: BaseException, fmt: str = "raw", binding: str = "") -> bytes:
    """Last resort when a formatter failed: the raw escaped body, marked with the error's kind."""
    return marked_line(delivery, f"format failed: {type(error).__name__}", fmt, binding)
