"""Template fields for notifications and AMQP properties; priority and event_type for syslog."""

from __future__ import annotations

import json
import socket

import pytest

from bridged.formats import LineMeta, TemplateError, compile_template, make_formatter, notification_meta
from bridged.sinks import truncate_json
from bridged.sinks.syslogmsg import SyslogMessages, SyslogSinkConfig
from tests.unit.helpers import make_delivery

INNER = {
    "message_id": "note-id",
    "publisher_id": "network.ctl1",
    "event_type": "port.create.end",
    "priority": "WARN",
    "timestamp": "2026-11-22 05:00:00.000001",
    "payload": {"port": {"id": "p-1"}},
    "_context_request_id": "req-7",
}
BODY = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(INNER)}).encode()


def test_notification_and_amqp_fields_are_distinct():
    """{priority}, {message_id}, {timestamp} are the notification's; amqp_* are the properties."""
    fmt = make_formatter(
        "{priority}|{message_id}|{timestamp}|{request_id}|{publisher_id}|{event_type}|{payload}"
        "|{amqp_priority}|{amqp_message_id}|{amqp_timestamp}",
        "b",
    )
    line = fmt(make_delivery(BODY, priority=0, message_id="amqp-id", timestamp=1700000000))
    assert line.decode().split("|") == [
        "WARN", "note-id", "2026-11-22 05:00:00.000001", "req-7", "network.ctl1", "port.create.end",
        '{"port":{"id":"p-1"}}', "0", "amqp-id", "1700000000",
    ]  # fmt: skip


def test_old_property_names_point_to_their_new_names():
    with pytest.raises(TemplateError, match=r"amqp_content_type"):
        compile_template("{content_type}")


def test_notification_fields_are_empty_for_other_messages():
    assert make_formatter("[{priority}][{event_type}][{payload}]", "b")(make_delivery(b"plain")) == b"[][][]"


def test_meta_reads_oslo_2_and_bare_notifications():
    meta = notification_meta(make_delivery(BODY), "b")
    assert meta[:3] == ("WARN", "port.create.end", "network.ctl1")
    assert (meta.routing_key, meta.exchange, meta.binding) == ("notifications.info", "nova", "b")
    assert notification_meta(make_delivery(json.dumps(INNER).encode()))[:2] == ("WARN", "port.create.end")
    assert notification_meta(make_delivery(b"\xff not json"))[:3] == (None, None, None)
    assert notification_meta(make_delivery(b'{"priority": 3}'))[:2] == (None, None)


def sink(**config) -> SyslogMessages:
    return SyslogMessages(SyslogSinkConfig("s", "syslog", **{"address": "udp://127.0.0.1:514", **config}))


@pytest.mark.parametrize(
    ("priority", "severity"),
    [("CRITICAL", 2), ("ERROR", 3), ("WARN", 4), ("warning", 4), ("INFO", 6), ("AUDIT", 5),
     ("SAMPLE", 6), ("DEBUG", 7), ("nonsense", 6), (None, 6)],
)  # fmt: skip
def test_priority_sets_the_severity(priority, severity):
    s = sink(facility=16)
    middle, with_msgid = s.stamp()
    header = s.header(middle, with_msgid, LineMeta(priority, "compute.instance.create.end"))
    assert header.startswith(b"<%d>1 " % (16 * 8 + severity))
    assert header.endswith(b" compute.instance.create.end - ")


def test_msgid_is_cut_to_32_printable_characters():
    s = sink()
    middle, with_msgid = s.stamp()
    header = s.header(middle, with_msgid, LineMeta("INFO", "a.very.long.event_type.that.goes.on.and on"))
    assert header.split(b" ")[-3] == b"a.very.long.event_type.that.goes"


def test_local_format_has_no_hostname_and_no_version():
    s = sink(protocol="local", tag="nova")
    middle, with_msgid = s.stamp()
    header = s.header(middle, with_msgid, LineMeta("ERROR", "x"))
    assert not with_msgid
    assert header.startswith(b"<11>") and b" nova[" in header and socket.gethostname().encode() not in header
    assert header.endswith(b"]: ")


@pytest.mark.parametrize("size", [600, 5000, 100_000])
def test_truncated_json_stays_json(size):
    line = json.dumps({"payload": "é" * size, "event_type": "x"}, ensure_ascii=False).encode()
    cut = truncate_json(line, 480)
    assert len(cut) <= 480
    rec = json.loads(cut)
    assert rec["bridged_truncated"] is True and rec["size"] == len(line) and line.decode().startswith(rec["head"])
