"""Filters: keep needs every field to match one of its globs, drop refuses any match; the body parsed at most once."""

from __future__ import annotations

import json

from bridged.filters import compile_filter
from tests.unit.helpers import make_delivery


def note(event_type: str, priority: str = "INFO", publisher: str = "compute.ctl1") -> bytes:
    inner = {"event_type": event_type, "priority": priority, "publisher_id": publisher, "payload": {}}
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def test_no_rules_is_no_filter():
    assert compile_filter({}, {}) is None


def test_keep_matches_globs_on_the_notification_and_the_routing_key():
    wanted = compile_filter({"event_type": ("compute.instance.*",), "routing_key": ("notifications.*",)}, {})
    assert wanted is not None
    assert wanted(make_delivery(note("compute.instance.create.end")))
    assert not wanted(make_delivery(note("volume.create.end")))
    assert not wanted(make_delivery(note("compute.instance.create.end"), routing_key="compute"))


def test_drop_wins_and_priority_compares_without_case():
    wanted = compile_filter({"event_type": ("*",)}, {"priority": ("debug",)})
    assert wanted is not None
    assert not wanted(make_delivery(note("x.y", priority="DEBUG")))
    assert wanted(make_delivery(note("x.y", priority="INFO")))


def test_a_body_that_is_no_notification_matches_no_notification_rule():
    keep = compile_filter({"event_type": ("*",)}, {})
    drop = compile_filter({}, {"event_type": ("*",)})
    assert keep is not None and drop is not None
    assert not keep(make_delivery(b"\xff not json"))
    assert drop(make_delivery(b"plain text"))


def test_headers_are_matched_as_text():
    wanted = compile_filter({"header.tenant": ("t-*",)}, {})
    assert wanted is not None
    assert wanted(make_delivery(b"{}", application_headers={"tenant": b"t-1"}))
    assert not wanted(make_delivery(b"{}", application_headers={"tenant": "other"}))
    assert not wanted(make_delivery(b"{}"))


def test_the_parsed_notification_is_kept_on_the_delivery_for_the_formats_and_sinks():
    delivery = make_delivery(note("compute.instance.create.end"))
    wanted = compile_filter({"event_type": ("compute.*",)}, {})
    assert wanted is not None and wanted(delivery)
    assert delivery.note["event_type"] == "compute.instance.create.end"
