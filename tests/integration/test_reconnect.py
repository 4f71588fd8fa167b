"""Connections: lost, restarted, timed out, or kept alive by heartbeats; each resumes where it was."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.integration.conftest import (
    base_config,
    fanout_binding,
    rabbitmqctl,
    start_on_fanout,
    wait_lines,
    wait_until,
)


def _assert_resumes(broker, bridged, exchange, path):
    """After a broker-side fault: reconnected, the next message follows the one before, still running."""
    broker.reconnect()
    broker.publish(exchange, "", b"after")
    assert wait_lines(path, 2) == ["before", "after"]
    assert bridged.proc.poll() is None


def test_recovers_after_close_all_connections(broker, start_bridged, uid, tmp_path):
    """rabbitmqctl close_all_connections: bridged reconnects and keeps delivering."""
    path = tmp_path / "out.log"
    bridged, exchange, _queue = start_on_fanout(broker, start_bridged, uid, path)
    broker.publish(exchange, "", b"before")
    wait_lines(path, 1)
    rabbitmqctl("close_all_connections", "test: forced close")
    bridged.wait_event("reconnect_scheduled")
    bridged.wait_event("consuming", count=2)
    _assert_resumes(broker, bridged, exchange, path)


def test_broker_restart_redeclares_a_non_durable_queue(broker, start_bridged, uid, tmp_path):
    """stop_app/start_app wipes a non-durable queue and exchange; the next connect declares them again."""
    path = tmp_path / "out.log"
    bridged, exchange, _queue = start_on_fanout(broker, start_bridged, uid, path, durable=False,
                                                exchange_durable=False)  # fmt: skip
    broker.publish(exchange, "", b"before")
    wait_lines(path, 1)
    try:
        rabbitmqctl("stop_app")
        bridged.wait_event("reconnect_scheduled")
        time.sleep(1)
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    bridged.wait_event("consuming", count=2, timeout=60)
    _assert_resumes(broker, bridged, exchange, path)


def test_idle_binding_keeps_its_connection_through_heartbeats(broker, start_bridged, uid, tmp_path):
    """With heartbeat 1 s and no traffic for 8 s, the connection stays up (we send ours while idle)."""
    path = tmp_path / "out.log"
    exchange, _, binding = fanout_binding(broker, uid, sink="f")
    config = base_config({"f": {"type": "file", "path": str(path)}}, {"b": binding})
    config["broker"]["heartbeat"] = 1
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    time.sleep(8)
    broker.publish(exchange, "", b"still here")
    assert wait_lines(path, 1) == ["still here"]
    assert bridged.count("reconnect_scheduled") == 0
    assert bridged.count("consuming") == 1


def test_short_heartbeat_survives_a_loaded_machine(broker, start_bridged, uid, tmp_path):
    """heartbeat: 2 with three busy loops on two cores: the idle connection is kept (ticks at heartbeat/4)."""
    heartbeat = 2
    exchange, _, binding = fanout_binding(broker, uid, sink="f")
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


def test_consumer_timeout_reconnects_at_once(broker, start_bridged, uid, tmp_path):
    """A sink down longer than RabbitMQ's consumer_timeout: the 406 it causes is a reconnect, not a refusal."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the sink wants a directory")
    exchange, _, binding = fanout_binding(broker, uid, sink="f")
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
