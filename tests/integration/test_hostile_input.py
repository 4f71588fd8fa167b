"""Hostile input: odd bodies and properties each give exactly one (marked) line, and the binding keeps going."""

from __future__ import annotations

import base64
import datetime
import json
import os
import sys
import time

from tests.integration.conftest import base_config, fanout_binding, queue_counts, wait_lines, wait_until

HOSTILE_BODIES: list[tuple[bytes, dict]] = [
    (b"", {}),
    (b"plain", {}),
    (b"line one\nline two\r\nline three\rend", {}),
    (b"\x1b[2J\x1b[31mred\x1b]0;title\x07", {}),
    (b"nul\x00byte", {}),
    (b"\xff\xfe\xfd invalid utf-8 \xc3\x28", {}),
    ("unicode separators \u2028 \u2029 \u0085 bidi \u202e".encode(), {}),
    (os.urandom(4096), {}),
    (b"[" * 10_000 + b"]" * 10_000, {"content_type": "application/json"}),
    (b'{"a": NaN, "b": 1}', {}),
    (b"1" * 5000, {}),
    (b"x" * (4 * 1024 * 1024 + 17), {}),
    ("caf\u00e9 \n".encode(), {"content_encoding": "utf-8"}),
    (b"\xff\xfe", {"content_encoding": "utf-8"}),
    (b"abc", {"content_encoding": "no-such-codec"}),
    (b'{"oslo.version": "2.0", "oslo.message": "{not json"}', {}),
    (b'{"oslo.version": "2.0", "oslo.message": 42}', {}),
    (b"ok", {"application_headers": {"bin": b"\x00\xff", "nested": {"a": [1, 2, {"b": None}]}, "n": 2**62}}),
    (b"ok", {"message_id": "id\nforged", "app_id": "\x1b[31m", "type": "t", "correlation_id": "c"}),
]


def test_every_hostile_body_gives_exactly_one_line_per_format(broker, start_bridged, uid, tmp_path):
    """raw, json, oslo and a template each write one line per message, JSON lines parse, ESC never leaks."""
    exchange = f"test.hostile.{uid}"
    formats = {"raw": "raw", "json": "json", "oslo": "oslo", "tpl": "{routing_key} {message_id} {body}"}
    sinks = {name: {"type": "file", "path": str(tmp_path / f"{name}.log")} for name in formats}
    bindings = {
        name: {
            "exchange": exchange,
            "exchange_type": "fanout",
            "queue": f"bridged.test.{uid}.{name}",
            "sink": name,
            "format": fmt,
        }
        for name, fmt in formats.items()
    }
    broker.queues.update(b["queue"] for b in bindings.values())
    broker.exchanges.add(exchange)
    bridged = start_bridged(base_config(sinks, bindings))
    bridged.wait_event("consuming", count=len(formats))
    for body, properties in HOSTILE_BODIES:
        broker.publish(exchange, "k", body, **properties)
    broker.publish(exchange, "k", b"sentinel")
    total = len(HOSTILE_BODIES) + 1
    for name in formats:
        raw = wait_lines(tmp_path / f"{name}.log", total, timeout=60)
        data = (tmp_path / f"{name}.log").read_bytes()
        assert len(raw) == total, f"{name}: {len(raw)} lines for {total} messages"
        assert data.count(b"\n") == total
        assert b"\x1b" not in data and b"\x00" not in data and b"\r" not in data
        if name in ("json", "oslo"):
            records = [json.loads(line) for line in raw]
            assert records[-1].get("body") == "sentinel"
        else:
            assert raw[-1].endswith("sentinel")
    json_records = [json.loads(line) for line in (tmp_path / "json.log").read_text().splitlines()]
    by_index = dict(enumerate(json_records))
    assert by_index[7]["body_encoding"] == "base64"
    assert by_index[11]["body"] == "x" * (4 * 1024 * 1024 + 17)
    assert by_index[12]["body"] == "caf\u00e9 \n"
    assert by_index[17]["properties"]["headers"]["nested"] == {"a": [1, 2, {"b": None}]}
    assert by_index[17]["properties"]["headers"]["bin"] == "\x00\\xff"
    assert bridged.proc.poll() is None


def test_huge_bodies_header_tables_and_odd_properties(broker, start_bridged, uid, tmp_path):
    """16 MiB body, a 3,000-entry header table, every property set oddly: one valid line each, in order."""

    exchange = f"test.hostile.{uid}"
    out = tmp_path / "json.log"
    config = base_config({"f": {"type": "file", "path": str(out)}},
                         {"b": {"exchange": exchange, "exchange_type": "fanout", "queue": f"bridged.test.{uid}",
                                "sink": "f", "format": "json"}})  # fmt: skip
    broker.queues.add(f"bridged.test.{uid}")
    broker.exchanges.add(exchange)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    huge = os.urandom(16 * 1024 * 1024)
    headers = {f"h{i}\x1b": ("v\n" * 10) for i in range(3_000)}  # ~100 KB: a header frame must fit frame_max (128 KiB)
    odd = {
        "content_type": "\x1b[31m/\x00", "content_encoding": "utf-16", "priority": 255, "delivery_mode": 1,
        "correlation_id": "\n" * 100, "reply_to": "\u202e", "expiration": "86400000", "message_id": "",
        "timestamp": 0, "type": "t" * 255, "user_id": "guest", "app_id": "\x07",
    }  # fmt: skip
    broker.publish(exchange, "", huge)
    broker.publish(exchange, "", b"headers", application_headers=headers)
    broker.publish(exchange, "", b"odd", **odd)
    broker.publish(exchange, "", b"sentinel")
    lines = wait_lines(out, 4, timeout=120)
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    assert base64.b64decode(records[0]["body"]) == huge and records[0]["body_encoding"] == "base64"
    assert len(records[1]["properties"]["headers"]) == 3_000
    assert records[2]["properties"]["priority"] == 255 and records[2]["properties"]["app_id"] == "\x07"
    assert records[3]["body"] == "sentinel"
    data = out.read_bytes()
    assert b"\x1b" not in data and b"\x07" not in data and data.count(b"\n") == 4
    assert bridged.proc.poll() is None


class Year10000(datetime.datetime):
    """Encodes (AMQP 'T', seconds since the epoch) as a time in year 10000, which Python cannot decode."""

    def utctimetuple(self) -> time.struct_time:
        # 31 Dec 9999 plus 48 hours: calendar.timegm adds the hours up, the receiver cannot decode the result.
        return time.struct_time((9999, 12, 31, 48, 0, 0, 0, 365, 0))


def _deep_table(depth: int) -> dict:
    table: dict = {"leaf": 1}
    for _ in range(depth):
        table = {"t": table}
    return table


def test_undecodable_properties_are_written_marked_and_the_binding_goes_on(broker, start_bridged, uid, tmp_path):
    """A time in year 10000, a 3,000-deep table, invalid UTF-8: each gives one marked line, then the rest flows."""
    exchange, queue, binding = fanout_binding(broker, uid, sink="f", format="json")
    out = tmp_path / "out.log"
    bridged = start_bridged(base_config({"f": {"type": "file", "path": str(out)}}, {"b": binding}))
    bridged.wait_event("consuming")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # py-amqp encodes tables recursively; the publisher must get it out
    try:
        broker.publish(exchange, "", b"year 10000", application_headers={"sent": Year10000(2000, 1, 1)})
        broker.publish(exchange, "", b"deep table", application_headers=_deep_table(3000))
        broker.publish(exchange, "", b"bad utf-8 content type", content_type=b"\xff\xfe")
        broker.publish(exchange, "", b"bad utf-8 header key", application_headers={b"\xff\xfekey": "v"})
    finally:
        sys.setrecursionlimit(limit)
    for i in range(5):
        broker.publish(exchange, "", f"after{i}".encode())
    lines = wait_lines(out, 9, timeout=30)
    records = [json.loads(line) for line in lines]
    bodies = [r["body"] for r in records]
    assert bodies == ["year 10000", "deep table", "bad utf-8 content type", "bad utf-8 header key"] + [
        f"after{i}" for i in range(5)
    ]
    for record in records[:3]:
        assert record["properties"]["bridged_error"].startswith("undecodable AMQP properties"), record
    # py-amqp passes a key that is not UTF-8 as bytes: it is written escaped, in a valid JSON record.
    assert records[3]["properties"]["headers"] == {"\\xff\\xfekey": "v"}
    assert bridged.count("properties_undecodable") == 3
    assert bridged.count("reconnect_scheduled") == 0, "a poison header must not cost the connection"
    wait_until(lambda: queue_counts(queue) == (0, 0), 10, "everything acked")
