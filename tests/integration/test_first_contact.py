"""What a new operator and hostile input hit first: poison headers, partial writes, closed stdout, shared queues."""

from __future__ import annotations

import datetime
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

from tests.integration.conftest import (
    base_config,
    queue_counts,
    rabbitmqctl,
    read_lines,
    wait_lines,
    wait_until,
)
from tests.integration.test_syslog import RFC5424, OctetCountingServer


def _binding(broker, uid: str, **extra) -> tuple[str, str, dict]:
    exchange, queue = f"test.first.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    return exchange, queue, {"exchange": exchange, "exchange_type": "fanout", "queue": queue, **extra}


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
    exchange, queue, binding = _binding(broker, uid, sink="f", format="json")
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


def test_partial_write_resumes_at_the_byte(broker, start_bridged, uid, tmp_path):
    """A file that stops growing mid-batch (EFBIG after a short write): no cut line, no duplicate, all arrive."""
    exchange, _, binding = _binding(broker, uid, sink="f", batch_size=50, prefetch=200)
    out = tmp_path / "out.log"
    limit = 1000  # bytes: the first batch's 50 lines of ~40 bytes do not fit
    config = base_config({"f": {"type": "file", "path": str(out)}}, {"b": binding})

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    bridged = start_bridged(config, preexec_fn=limit_file_size)
    bridged.wait_event("consuming")
    count = 300
    for i in range(count):
        broker.publish(exchange, "", f"message number {i:05d} ".encode() + b"x" * 15)
    bridged.wait_event("sink_failed")
    assert out.stat().st_size == limit, "the write was not cut mid-line"
    resource.prlimit(bridged.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    lines = wait_lines(out, count, timeout=60)
    expected = [f"message number {i:05d} " + "x" * 15 for i in range(count)]
    assert lines == expected, "cut or duplicated lines after the partial write"


def test_closed_stdout_ends_bridged_and_leaves_the_rest_queued(broker, uid, tmp_path):
    """`bridged ... | head -1`: bridged exits (code 4) instead of failing forever; nothing unwritten is acked."""
    exchange, queue, binding = _binding(broker, uid, sink="out", batch_size=1)
    config_path = tmp_path / "bridged.yaml"
    config_path.write_text(json.dumps(base_config({"out": {"type": "stdout"}}, {"b": binding})))
    head = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert head.stdin is not None
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(config_path)],
                                stdout=head.stdin, stderr=err, stdin=subprocess.DEVNULL)  # fmt: skip
    head.stdin.close()
    try:
        wait_until(lambda: b"consuming" in stderr.read_bytes(), 30, "consuming")
        for i in range(20):
            broker.publish(exchange, "", f"m{i}".encode())
        assert proc.wait(30) == 4
        assert head.stdout.read() == b"m0\n"  # type: ignore[union-attr]
        head.wait(10)
        ready, unacked = queue_counts(queue)
        assert ready >= 18 and unacked == 0
        assert b"output_closed" in stderr.read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_tcp_syslog_sends_each_batch_at_once_on_one_connection(broker, start_bridged, uid):
    """Twenty batches in a row go out well within one sink timeout, without reconnecting."""
    server = OctetCountingServer()
    try:
        timeout = 5.0
        exchange, _, binding = _binding(broker, uid, sink="s")
        sink = {"type": "syslog", "address": f"tcp://127.0.0.1:{server.port}", "timeout": timeout}
        bridged = start_bridged(base_config({"s": sink}, {"b": binding}))
        bridged.wait_event("consuming")
        started = time.monotonic()
        for i in range(20):
            broker.publish(exchange, "", f"m{i}".encode())
            wait_until(lambda n=i: len(server.messages) > n, timeout * 4, f"message {i}")
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"20 batches took {elapsed:.1f} s: a batch waited for the sink timeout"
        assert [RFC5424.fullmatch(m).group(5) for m in server.messages] == [f"m{i}".encode() for i in range(20)]
        assert server.connections == 1
    finally:
        server.close()


def test_connections_are_named_and_a_shared_queue_is_reported(broker, start_bridged, uid, tmp_path):
    """Each connection says `bridged <binding>@<host>`; a second consumer on the queue is logged."""
    _exchange, queue, binding = _binding(broker, uid, sink="f")
    config = base_config({"f": {"type": "file", "path": str(tmp_path / "o.log")}}, {"nova": binding})
    first = start_bridged(config)
    first.wait_event("consuming")
    names = rabbitmqctl("list_connections", "-q", "--no-table-headers", "client_properties")
    assert f"bridged nova@{socket.gethostname()}" in names
    assert first.count("queue_shared") == 0
    second = start_bridged(config)  # the same binding on a second instance
    second.wait_event("queue_shared")
    event = next(e for e in second.events() if e["event"] == "queue_shared")
    assert event["consumers"] == 1 and event["queue"] == queue


def test_short_heartbeat_survives_a_loaded_machine(broker, start_bridged, uid, tmp_path):
    """heartbeat: 2 with three busy loops on two cores: the idle connection is kept (ticks at heartbeat/4)."""
    heartbeat = 2
    exchange, _, binding = _binding(broker, uid, sink="f")
    config = base_config({"f": {"type": "file", "path": str(tmp_path / "o.log")}}, {"b": binding})
    config["broker"]["heartbeat"] = heartbeat
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        time.sleep(6 * heartbeat)  # the broker drops a connection after two missed heartbeats
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    assert bridged.count("reconnect_scheduled") == 0
    broker.publish(exchange, "", b"still here")
    assert wait_lines(tmp_path / "o.log", 1) == ["still here"]


def test_log_file_is_reopened_on_sighup(broker, start_bridged, uid, tmp_path):
    """logrotate renames bridged's own log and sends HUP: new events go to the new file."""
    _exchange, _, binding = _binding(broker, uid, sink="f")
    log = tmp_path / "bridged.log"
    config = base_config({"f": {"type": "file", "path": str(tmp_path / "o.log")}}, {"b": binding})
    bridged = start_bridged(config, args=["--log-file", str(log), "--log-format", "json"])
    wait_until(lambda: "consuming" in log.read_text() if log.exists() else False, 30, "consuming in the log file")
    os.rename(log, tmp_path / "bridged.log.1")
    bridged.signal(signal.SIGHUP)
    wait_until(lambda: log.exists() and "reloaded" in log.read_text(), 30, "events in the new log file")
    events = [json.loads(line)["event"] for line in read_lines(log)]
    assert "reloaded" in events


def test_consumer_timeout_reconnects_at_once(broker, start_bridged, uid, tmp_path):
    """A sink down longer than RabbitMQ's consumer_timeout: the 406 it causes is a reconnect, not a refusal."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the sink wants a directory")
    exchange, _, binding = _binding(broker, uid, sink="f")
    config = base_config({"f": {"type": "file", "path": str(blocker / "out.log")}}, {"b": binding})
    # A short timeout, checked every second (the broker's defaults: 30 min, checked every minute).
    rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 2000).")
    rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 1000).")
    try:
        bridged = start_bridged(config)
        bridged.wait_event("consuming")
        broker.publish(exchange, "", b"held past the consumer timeout")
        bridged.wait_event("sink_failed")
        wait_until(
            lambda: any(
                "timed out" in e.get("reason", "") for e in bridged.events() if e["event"] == "reconnect_scheduled"
            ),
            30,
            "a reconnect for the consumer timeout",
        )
        event = next(e for e in bridged.events() if e["event"] == "reconnect_scheduled" and "timed out" in e["reason"])
        assert event["retry_in"] <= config["reconnect"]["initial_delay"]
        assert bridged.count("broker_refused") == 0
    finally:
        rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 1800000).")
        rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 60000).")
    blocker.unlink()
    blocker.mkdir()
    assert wait_lines(blocker / "out.log", 1) == ["held past the consumer timeout"]


def test_unwritable_health_file_is_logged_once_and_debug_shows_the_flow(broker, start_bridged, uid, tmp_path):
    """--health-file that cannot be touched: one warning, not one a second; --log-level debug shows each batch."""
    exchange, _, binding = _binding(broker, uid, sink="f")
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = base_config({"f": {"type": "file", "path": str(tmp_path / "o.log")}}, {"b": binding})
    bridged = start_bridged(config, args=["--health-file", str(blocker / "health")])  # conftest runs with debug
    bridged.wait_event("consuming")
    broker.publish(exchange, "", b"one")
    wait_lines(tmp_path / "o.log", 1)
    time.sleep(3)  # the supervisor ticks once a second
    assert bridged.count("health_file_failed") == 1
    assert bridged.count("declared") == 1 and bridged.count("batch_acked", lines=1) == 1
    blocker.unlink()
    blocker.mkdir()
    bridged.wait_event("health_file_recovered")
    wait_until(lambda: (blocker / "health").exists(), 10, "the health file")
