"""Secrets masked in parsed bodies, inside an oslo envelope's JSON string too (the Redactor does the walking)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridged.formats.jsontext import ENCODER, fast_dumps, splice_safe
from bridged.formats.notification import envelope_inner
from bridged.redact import REDACTED, Redactor


def redact_or_mark(value: Any, redactor: Redactor) -> Any:
    try:
        return redactor.redact(value)
    except ValueError:  # too deep to walk: nothing of it is written
        return f"{REDACTED} (nested too deeply to inspect)"


def body_needs_redaction(value: Any, redactor: Redactor, inner: Any) -> bool:
    """Whether a parsed body or *inner*, the message inside its oslo envelope, holds a live secret."""
    return redactor.needs(value) if inner is None else (redactor.needs(inner) or redactor.needs(value))


def redact_body(value: Any, redactor: Redactor, encode: Callable[[Any], Any] | None = None, inner: Any = None) -> Any:
    """*value* with secrets masked, inside an oslo envelope's JSON string too (*inner*: already parsed)."""
    if inner is None:
        inner = envelope_inner(value)
    if inner is not None and redactor.needs(inner):
        value = dict(value)
        masked = redact_or_mark(inner, redactor)
        value["oslo.message"] = ENCODER.encode(masked) if encode is None else encode(masked).decode()
    return redact_or_mark(value, redactor)


def redacted_text(value: Any, redactor: Redactor, inner: Any) -> bytes | None:
    """*value* redacted (inside an oslo envelope too) as compact JSON that can be spliced as is, or None.

    The fast way to rewrite a body with a live secret: orjson encodes the
    masked copy, and the result is used only when it is plain ASCII on one line.
    """
    if fast_dumps is None:
        return None
    try:
        text = fast_dumps(redact_body(value, redactor, fast_dumps, inner))
    except (TypeError, ValueError):
        return None
    return text if splice_safe(text) else None
