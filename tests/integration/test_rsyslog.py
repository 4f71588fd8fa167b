"""A real rsyslog (its own config, not the system's) reads bridged's syslog sinks right.

Over a unix socket (imuxsock, as /dev/log) bridged speaks the local syslog(3)
format; over UDP (imudp) RFC 5424. rsyslog must see the severity of the
notification's priority, bridged's tag as app-name, its pid, event_type as
MSGID (RFC 5424), and the line itself as the message, with no header inside.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import base_config, wait_until
from tests.integration.servers import Rsyslog, needs_rsyslog


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    needs_rsyslog()
    server = Rsyslog(tmp_path, ("unix", "udp"))
    yield server
    server.stop()


def notification(priority: str, event_type: str, index: int) -> bytes:
    inner = {"message_id": f"m{index}", "publisher_id": "compute.ctl1", "event_type": event_type,
             "priority": priority, "payload": {"n": index}, "timestamp": "2026-11-22 05:16:18.000001"}  # fmt: skip
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


CASES = [  # priority -> the severity rsyslog must report
    ("CRITICAL", "crit"), ("ERROR", "err"), ("WARN", "warning"), ("WARNING", "warning"),
    ("INFO", "info"), ("AUDIT", "notice"), ("SAMPLE", "info"), ("DEBUG", "debug"),
]  # fmt: skip


def test_rsyslog_parses_unix_and_udp_sinks(broker, start_bridged, uid, rsyslog):
    exchange, queue = f"test.rsyslog.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    sinks = {
        "local": {"type": "syslog", "address": str(rsyslog.socket_path), "facility": "local3", "tag": "nova"},
        "udp": {
            "type": "syslog",
            "address": f"udp://127.0.0.1:{rsyslog.udp_port}",
            "facility": "local3",
            "tag": "nova",
        },
    }
    binding = {
        "exchange": exchange,
        "exchange_type": "fanout",
        "queue": queue,
        "sinks": ["local", "udp"],
        "format": "oslo",
    }
    bridged = start_bridged(base_config(sinks, {"b": binding}))
    bridged.wait_event("consuming")
    for i, (priority, _) in enumerate(CASES):
        broker.publish(exchange, "", notification(priority, f"compute.instance.event{i}", i))
    broker.publish(exchange, "", b"not a notification")
    expected = len(CASES) + 1
    wait_until(lambda: len(rsyslog.records()) >= 2 * expected, 30, f"{2 * expected} records in rsyslog's file")
    records = rsyslog.records()
    assert len(records) == 2 * expected
    for input_name in ("imuxsock", "imudp"):
        got = [r for r in records if r["input"] == input_name]
        assert len(got) == expected, (input_name, records)
        for i, ((_, severity), record) in enumerate(zip(CASES, got, strict=False)):
            assert record["severity"] == severity and record["facility"] == "local3", record
            assert record["app"] == "nova" and record["procid"] == str(bridged.proc.pid), record
            rec = json.loads(record["msg"].lstrip())  # the message is the JSON line, nothing before it
            assert rec["payload"] == {"n": i} and rec["priority"] == CASES[i][0]
            if input_name == "imudp":
                assert record["msgid"] == f"compute.instance.event{i}"
        plain = got[-1]
        assert plain["severity"] == "info" and json.loads(plain["msg"])["body"] == "not a notification", plain
        assert plain["msgid"] == "-"
