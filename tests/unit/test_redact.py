"""Redaction: secrets never reach a line, in any format, however the body nests them."""

from __future__ import annotations

import json

import pytest

from bridged.formats import make_formatter
from bridged.redact import DEFAULT_REDACT_KEYS, REDACTED, Redactor
from tests.unit.helpers import make_delivery
from tests.unit.test_formats import assert_one_safe_line

REDACTOR = Redactor(DEFAULT_REDACT_KEYS)
TOKEN = "gAAAAABlive-token-1234567890"
PASSWORD = "hunter2-admin-pass"


def old_oslo_notification(**extra) -> bytes:
    """A notification as an oslo.messaging before the 2023 backports sent it: a live token in the context."""
    inner = {
        "message_id": "m-1",
        "publisher_id": "compute.host1",
        "event_type": "compute.instance.create.end",
        "priority": "ERROR",
        "timestamp": "2026-11-22 05:16:18.123456",
        "payload": {"instance_id": "i-1", "admin_pass": PASSWORD, "nested": [{"db_password": PASSWORD}]},
        "_context_auth_token": TOKEN,
        "_context_service_catalog": [{"type": "compute", "endpoints": [{"url": "http://nova"}]}],
        "_context_request_id": "req-42",
        **extra,
    }
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


@pytest.mark.parametrize(
    "fmt", ["json", "oslo", "{priority} {event_type} {request_id} {payload} {body}", "{body}", "{payload}"]
)
def test_no_secret_in_any_format(fmt):
    """A live token, the catalog and payload passwords are masked; the rest of the message stays."""
    line = make_formatter(fmt, "nova", REDACTOR)(make_delivery(old_oslo_notification()))
    assert_one_safe_line(line)
    text = line.decode()
    assert TOKEN not in text and PASSWORD not in text and "http://nova" not in text
    assert "i-1" in text
    assert "redacted" in text


def test_oslo_record_keeps_fields_and_masks_values():
    rec = json.loads(make_formatter("oslo", "nova", REDACTOR)(make_delivery(old_oslo_notification())))
    assert rec["event_type"] == "compute.instance.create.end" and rec["payload"]["instance_id"] == "i-1"
    assert rec["_context_auth_token"] == REDACTED and rec["_context_service_catalog"] == REDACTED
    assert rec["payload"]["admin_pass"] == REDACTED and rec["payload"]["nested"][0]["db_password"] == REDACTED


def test_json_record_masks_inside_the_envelope_string():
    rec = json.loads(make_formatter("json", "nova", REDACTOR)(make_delivery(old_oslo_notification())))
    inner = json.loads(rec["body"]["oslo.message"])
    assert inner["_context_auth_token"] == REDACTED and inner["payload"]["instance_id"] == "i-1"


def test_already_masked_values_keep_the_fast_path_and_stay_as_sent():
    """Modern oslo sends '***' for the token: nothing to mask, the inner text is copied as is."""
    body = old_oslo_notification(_context_auth_token="***", _context_service_catalog=None)
    body = body.replace(json.dumps(PASSWORD).encode()[1:-1], b"")  # payload passwords now empty strings
    assert not REDACTOR.needs(json.loads(json.loads(body)["oslo.message"]))
    with_redaction = json.loads(make_formatter("oslo", "nova", REDACTOR)(make_delivery(body)))
    without = json.loads(make_formatter("oslo", "nova", None)(make_delivery(body)))
    with_redaction.pop("received_at"), without.pop("received_at")
    assert with_redaction == without


def test_redaction_off_writes_the_message_as_sent():
    line = make_formatter("oslo", "nova", None)(make_delivery(old_oslo_notification())).decode()
    assert TOKEN in line


def test_amqp_headers_are_masked():
    delivery = make_delivery(b"{}", application_headers={"X-Auth-Token": TOKEN, "trace": "t-1"})
    for fmt in ("json", "oslo", "{amqp_headers}"):
        text = make_formatter(fmt, "b", REDACTOR)(delivery).decode()
        assert TOKEN not in text and "t-1" in text


def test_key_words_match_case_insensitively_and_configurably():
    redactor = Redactor(["api_key"])
    assert redactor.redact({"My_API_Key": "k", "password": "p"}) == {"My_API_Key": REDACTED, "password": "p"}
    assert REDACTOR.redact({"adminPass": "x", "key_name": "mykey", "ok": True}) == {
        "adminPass": REDACTED,
        "key_name": "mykey",
        "ok": True,
    }


def test_hostile_nesting_is_masked_whole():
    """A body nested past the walk's limit never leaks: it becomes a marker."""
    deep: dict = {"password": "p"}
    for _ in range(500):
        deep = {"a": deep}
    body = json.dumps({"payload": deep}).encode()
    line = make_formatter("json", "b", REDACTOR)(make_delivery(body))
    assert_one_safe_line(line)
    assert b'"p"' not in line
