"""What gets written: keep and drop filters, a format per sink."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

from tests.integration.conftest import base_config, queue_counts, read_lines, wait_lines, wait_until
from tests.integration.servers import DatagramServer

# <PRI>1 TIMESTAMP HOST APP PID MSGID - MSG: the notification's priority and event_type ride along
WITH_MSGID = re.compile(rb"<(\d+)>1 \S+ \S+ \S+ \d+ (\S+) - (.*)", re.S)


def oslo(event_type: str, priority: str, publisher_id: str = "compute.ctl1", n: int = 0) -> bytes:
    inner = {"event_type": event_type, "priority": priority, "publisher_id": publisher_id, "payload": {"n": n}}
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def _tree(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_filters_keep_and_drop_by_each_field(broker, start_bridged, uid, tmp_path):
    """routing key, event_type, priority (any case), publisher_id, a header: kept ones written, the rest acked."""
    exchange, queue = f"test.filter.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    out = tmp_path / "out.log"
    binding = {
        "exchange": exchange, "routing_keys": ["#"], "queue": queue, "sink": "f", "format": "oslo",
        "filter": {
            "keep": {"routing_key": ["notifications.*"], "event_type": ["compute.*"],
                     "priority": ["ERROR", "CRITICAL"], "header.tenant": ["t1", "t[3-4]"]},
            "drop": {"publisher_id": ["*.test"]},
        },
    }  # fmt: skip
    config = base_config({"f": {"type": "file", "path": str(out)}}, {"b": binding}, metrics={"stats_interval": 1})
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    t1 = {"tenant": "t1"}
    sent = [
        ("notifications.error", oslo("compute.instance.create.end", "ERROR", n=1), t1, True),
        ("notifications.error", oslo("image.upload", "ERROR", n=2), t1, False),  # event_type
        ("notifications.info", oslo("compute.instance.update", "INFO", n=3), t1, False),  # priority
        ("notifications.critical", oslo("compute.instance.delete", "critical", n=4), {"tenant": "t4"}, True),
        ("notifications.error", oslo("compute.x", "ERROR", "compute.test", n=5), t1, False),  # drop publisher
        ("notifications.error", oslo("compute.x", "ERROR", n=6), {"tenant": "t2"}, False),  # header
        ("notifications.error", oslo("compute.x", "ERROR", n=7), None, False),  # no header
        ("compute.host1", oslo("compute.x", "ERROR", n=8), t1, False),  # routing key (RPC)
        ("notifications.error", b"not json", t1, False),  # no event_type
    ]
    for key, body, headers, _ in sent:
        broker.publish(exchange, key, body, **({"application_headers": headers} if headers else {}))
    wait_until(lambda: queue_counts(queue) == (0, 0), 30, "every message acked")
    kept = [json.loads(line)["payload"]["n"] for line in read_lines(out)]
    assert kept == [n for n, (_, _, _, keep) in enumerate(sent, 1) if keep] == [1, 4]
    dropped = sum(e.get("dropped", 0) for e in bridged.events() if e["event"] == "batch_acked")
    assert dropped == len(sent) - 2

    def counted(key: str) -> int:
        return sum(e["bindings"]["b"][key] for e in bridged.events() if e["event"] == "stats")

    wait_until(lambda: counted("filtered") == len(sent) - 2, 10, "the dropped ones counted as filtered")
    assert counted("acked") == 2, "a dropped message is not counted as delivered"


def test_oslo_to_a_file_and_json_to_syslog_from_one_binding(broker, start_bridged, uid, tmp_path):
    """A sink's own format: one queue, one broker copy, each sink its format."""
    exchange, queue = f"test.perfmt.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    out = tmp_path / "oslo.log"
    server = DatagramServer(socket.AF_INET, ("127.0.0.1", 0))
    try:
        port = server.sock.getsockname()[1]
        sinks = {
            "file": {"type": "file", "path": str(out)},
            "syslog": {"type": "syslog", "address": f"udp://127.0.0.1:{port}", "format": "json"},
            "text": {"type": "file", "path": str(tmp_path / "text.log"), "format": "{priority} {event_type}"},
        }
        binding = {"exchange": exchange, "queue": queue, "sinks": ["file", "syslog", "text"], "format": "oslo"}
        bridged = start_bridged(base_config(sinks, {"b": binding}))
        bridged.wait_event("consuming")
        for n in range(5):
            broker.publish(exchange, "notifications.info", oslo("compute.instance.update", "WARN", n=n))
        records = [json.loads(line) for line in wait_lines(out, 5)]
        assert [r["payload"]["n"] for r in records] == list(range(5))  # oslo: unwrapped
        assert wait_lines(tmp_path / "text.log", 5) == ["WARN compute.instance.update"] * 5
        wait_until(lambda: len(server.messages) >= 5, 20, "5 datagrams")
        for n, datagram in enumerate(server.messages):
            match = WITH_MSGID.fullmatch(datagram)
            assert match, datagram
            assert int(match.group(1)) == 8 + 4 and match.group(2) == b"compute.instance.update"  # user.warning
            record = json.loads(match.group(3))
            assert "oslo.message" in record["body"] and json.loads(record["body"]["oslo.message"])["payload"]["n"] == n
        assert queue_counts(queue) == (0, 0)
    finally:
        server.close()
