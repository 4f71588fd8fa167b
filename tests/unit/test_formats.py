"""Formats: one safe line per message, whatever the body."""

from __future__ import annotations

import datetime
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridged.formats import (
    TEMPLATE_FIELDS,
    TemplateError,
    compile_template,
    escape_text,
    format_raw,
    make_formatter,
    utc_now,
)
from bridged.redact import DEFAULT_REDACT_KEYS, Redactor
from tests.unit.helpers import make_delivery

REDACTOR = Redactor(DEFAULT_REDACT_KEYS)


SAFE_LINE = re.compile(rb"[^\x00-\x1f\x7f]*")


def assert_one_safe_line(line: bytes) -> None:
    assert isinstance(line, bytes)
    assert SAFE_LINE.fullmatch(line), line[:200]
    text = line.decode("utf-8")
    assert len(text.splitlines()) <= 1
    assert not re.search("[\u0080-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]", text)


def test_raw_passes_plain_ascii_untouched():
    body = b'{"event_type": "compute.instance.create.end"}'
    assert format_raw(make_delivery(body)) is body


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (b"a\nb", b"a\\nb"),
        (b"a\r\nb\tc", b"a\\r\\nb\\tc"),
        (b"\x1b[31mred", b"\\x1b[31mred"),
        (b"nul\x00", b"nul\\x00"),
        (b"\xff\xfe", b"\\xff\\xfe"),
        (b"", b""),
        ("caf\u00e9".encode(), "caf\u00e9".encode()),
        ("a\u2028b\u202ec".encode(), b"a\\u2028b\\u202ec"),
        ("str \n body", b"str \\n body"),
        ("\x85", b"\\x85"),
    ],
)
def test_raw_escapes_control_characters(body, line):
    assert format_raw(make_delivery(body)) == line


def test_escape_text_returns_clean_text_as_is():
    text = "nothing to escape here"
    assert escape_text(text) is text


def test_json_record_fields():
    """json: routing data, received_at, set properties, and the body as a JSON value."""
    delivery = make_delivery(b'{"a": [1, 2]}', redelivered=True, content_type="application/json",
                        message_id="m1", timestamp=datetime.datetime(2026, 1, 2, 3, 4, 5),
                        application_headers={"h": b"\x01v", "d": datetime.datetime(2026, 1, 1)})  # fmt: skip
    rec = json.loads(make_formatter("json", "nova")(delivery))
    assert rec["binding"] == "nova" and rec["exchange"] == "nova" and rec["routing_key"] == "notifications.info"
    assert rec["redelivered"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["received_at"])
    assert rec["body"] == {"a": [1, 2]}
    assert rec["properties"]["message_id"] == "m1"
    assert rec["properties"]["timestamp"] == "2026-01-02T03:04:05+00:00"
    assert rec["properties"]["headers"] == {"h": "\x01v", "d": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize(
    ("body", "value", "encoding"),
    [
        (b"plain text\n", "plain text\n", None),
        (b"42", 42, None),
        (b"", "", None),
        (b"NaN", "NaN", None),
        (b'{"a": Infinity}', '{"a": Infinity}', None),
        (b"\xff\x00", "/wA=", "base64"),
        ("already text", "already text", None),
        (b"[" * 5000 + b"]" * 5000, "[" * 5000 + "]" * 5000, None),
        (b"9" * 5000, "9" * 5000, None),
    ],
)
def test_json_body_value(body, value, encoding):
    """JSON bodies nest; text stays text; binary is base64 and marked; odd JSON falls back to text."""
    rec = json.loads(make_formatter("json", "b")(make_delivery(body)))
    assert rec["body"] == value
    assert rec.get("body_encoding") == encoding


def test_oslo_unwraps_the_envelope():
    """oslo: the oslo.message string becomes fields, payload an object."""
    inner = {"event_type": "image.upload", "publisher_id": "image.host1", "priority": "INFO",
             "payload": {"id": "abc", "size": 3}, "timestamp": "2026-01-01 00:00:00.0", "message_id": "u1"}  # fmt: skip
    envelope = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()
    rec = json.loads(make_formatter("oslo", "glance")(make_delivery(envelope)))
    for key, value in inner.items():
        assert rec[key] == value
    assert rec["oslo.version"] == "2.0" and "body" not in rec and rec["binding"] == "glance"


def test_oslo_keeps_record_keys_and_handles_bare_and_broken_messages():
    """A v1 (bare) message is used as is; clashing keys are prefixed; a broken envelope stays a body."""
    bare = json.dumps({"event_type": "x", "binding": "evil", "properties": 1}).encode()
    rec = json.loads(make_formatter("oslo", "b")(make_delivery(bare)))
    assert rec["event_type"] == "x" and rec["binding"] == "b" and rec["message.binding"] == "evil"
    broken = b'{"oslo.version": "2.0", "oslo.message": "{nope"}'
    assert json.loads(make_formatter("oslo", "b")(make_delivery(broken)))["body"]["oslo.message"] == "{nope"
    assert json.loads(make_formatter("oslo", "b")(make_delivery(b"text")))["body"] == "text"


def test_template_substitutes_named_fields_and_escapes_them():
    fmt = make_formatter(
        "{binding} {routing_key} {amqp_message_id} [{event_type}] {redelivered} {amqp_headers} {body}", "n"
    )
    body = json.dumps({"event_type": "compute.instance.create.end", "payload": {}}).encode()
    line = fmt(make_delivery(body, message_id="id\nforged", application_headers={"k": "v"}))
    assert line.decode().startswith('n notifications.info id\\nforged [compute.instance.create.end] false {"k":"v"} {')
    assert_one_safe_line(line)


def test_template_never_evaluates():
    """Attribute access, indexing, conversions and format specs are refused at config time."""
    for template in ("{body.__class__}", "{body[0]}", "{body!r}", "{body:{routing_key}}", "{__import__}", "{}"):
        with pytest.raises(TemplateError):
            compile_template(template)


def test_every_template_field_renders_for_a_bare_message():
    fmt = make_formatter(" ".join("{" + name + "}" for name in TEMPLATE_FIELDS), "b")
    assert_one_safe_line(fmt(make_delivery(b"\xff")))


def test_utc_now_format():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_now())


PROPERTY_VALUES = st.one_of(
    st.text(), st.binary(max_size=50), st.integers(), st.none(), st.booleans(),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(), st.binary(max_size=5), st.integers()), max_size=3),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=2000), st.text(max_size=500)), key=st.text(max_size=50),
       props=st.dictionaries(st.sampled_from(["message_id", "app_id", "type", "application_headers", "content_type"]),
                             PROPERTY_VALUES))  # fmt: skip
def test_any_input_gives_exactly_one_valid_line(body, key, props):
    """Property: any body, key and properties give one safe line per format; JSON lines parse."""
    delivery = make_delivery(body, routing_key=key, **props)
    for name in ("raw", "json", "oslo", "{routing_key}|{amqp_message_id}|{amqp_headers}|{event_type}|{body}"):
        for redactor in (None, REDACTOR):
            line = make_formatter(name, "b", redactor)(delivery)
            assert_one_safe_line(line)
            if name in ("json", "oslo"):
                rec = json.loads(line)
                assert rec["routing_key"] == key


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )
)
def test_json_bodies_roundtrip(value):
    """Property: a JSON body comes back as the same value."""
    body = json.dumps(value).encode()
    assert json.loads(make_formatter("json", "b")(make_delivery(body)))["body"] == value
