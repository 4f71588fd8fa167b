"""Faults bridged must survive with nothing lost, each counted: sent (confirmed), lost, duplicates."""

from __future__ import annotations

import os
import signal
import time

from tests.integration.conftest import base_config, queue_counts, rabbitmqctl, read_lines, wait_lines, wait_until
from tests.integration.reliability import StreamPublisher, record, wait_all_written


def _setup(broker, uid, tmp_path, **binding):
    exchange, queue = f"test.rel.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    broker.declare_exchange(exchange, "fanout")
    out = tmp_path / "out.log"
    config = base_config({"f": {"type": "file", "path": str(out)}},
                         {"b": {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sink": "f",
                                **binding}})  # fmt: skip
    return exchange, queue, out, config


def test_sigkill_three_times_during_a_stream(broker, start_bridged, uid, tmp_path):
    """kill -9 of bridged three times during 20,000 persistent messages, restarted each time: lost 0."""
    exchange, _, out, config = _setup(broker, uid, tmp_path)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    publisher = StreamPublisher(exchange, "", 20_000, uid)
    publisher.start()
    for kill in range(3):
        wait_until(lambda n=kill: len(read_lines(out)) > 4000 * (n + 1), 120, f"progress before kill {kill + 1}")
        bridged.proc.send_signal(signal.SIGKILL)
        bridged.proc.wait(10)
        bridged = start_bridged(config)
    publisher.join(300)
    figures = wait_all_written(publisher.confirmed, [out], 120)
    record("sigkill x3 during 20,000 messages", **figures)
    assert figures["sent"] == 20_000 and figures["lost"] == 0


def test_broker_restarts_twice_during_a_stream(broker, start_bridged, uid, tmp_path):
    """stop_app/start_app twice mid-stream: lost 0, bridged never exits, each recovery within max_delay + 5 s."""
    exchange, _, out, config = _setup(broker, uid, tmp_path)
    max_delay = config["reconnect"]["max_delay"]
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    publisher = StreamPublisher(exchange, "", 6000, uid, rate=500)
    publisher.start()
    recoveries = []
    for restart in range(2):
        wait_until(lambda n=restart: len(read_lines(out)) > 1500 * (n + 1), 60, f"progress before restart {restart}")
        consuming_before = bridged.count("consuming")
        try:
            rabbitmqctl("stop_app")
            time.sleep(2)
        finally:
            back = time.monotonic()  # recovery is timed from the start of start_app
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        bridged.wait_event("consuming", count=consuming_before + 1, timeout=max_delay + 30)
        recoveries.append(time.monotonic() - back)
        assert bridged.proc.poll() is None
    publisher.join(120)
    figures = wait_all_written(publisher.confirmed, [out], 60)
    record("broker stop_app/start_app x2 during a stream", **figures,
           recovery_s=[round(r, 1) for r in recoveries], returned_by_broker=len(publisher.returned))  # fmt: skip
    missing = sorted(set(publisher.confirmed) - set(read_lines(out)), key=lambda m: int(m.rsplit("-", 1)[1]))
    assert figures["lost"] == 0, (missing, queue_counts(f"bridged.test.{uid}"))
    assert all(r <= max_delay + 5 for r in recoveries), recoveries


def _broker_pid() -> int:
    out = rabbitmqctl("status")
    for line in out.splitlines():
        if "OS PID" in line:
            return int(line.split(":")[1])
    raise AssertionError("no OS PID in rabbitmqctl status")


def test_hung_broker_is_detected_by_heartbeats(broker, start_bridged, uid, tmp_path):
    """SIGSTOP the broker: heartbeats notice the dead connection; after SIGCONT bridged reconnects; lost 0."""
    exchange, _, out, config = _setup(broker, uid, tmp_path)
    config["broker"]["heartbeat"] = 2
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    publisher = StreamPublisher(exchange, "", 2000, uid)
    publisher.start()
    publisher.join(60)
    wait_lines(out, 2000)
    pid = _broker_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        bridged.wait_event("reconnect_scheduled", timeout=30)
        detected = next(e for e in bridged.events() if e["event"] == "reconnect_scheduled")
    finally:
        os.kill(pid, signal.SIGCONT)
    bridged.wait_event("consuming", count=2, timeout=90)
    broker.reconnect()
    after = StreamPublisher(exchange, "", 1000, uid + "-after")
    after.start()
    after.join(60)
    figures = wait_all_written(publisher.confirmed + after.confirmed, [out], 60)
    record("broker hung (SIGSTOP) then resumed", **figures, detected_by=detected["reason"].split(":")[0])
    assert figures["lost"] == 0


def test_queue_deleted_while_consuming(broker, start_bridged, uid, tmp_path):
    """rabbitmqctl delete_queue: the consumer-cancel notification leads to a redeclare and delivery resumes."""
    exchange, queue, out, config = _setup(broker, uid, tmp_path)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    broker.publish(exchange, "", b"before")
    wait_lines(out, 1)
    rabbitmqctl("delete_queue", queue)
    bridged.wait_event("reconnect_scheduled")
    reason = next(e for e in bridged.events() if e["event"] == "reconnect_scheduled")["reason"]
    bridged.wait_event("consuming", count=2)
    broker.publish(exchange, "", b"after")
    assert wait_lines(out, 2) == ["before", "after"]
    record("queue deleted while consuming", reason=reason.split(":")[0], resumed=True)
    assert "ConsumerCancelled" in reason or "NotFound" in reason


def test_precondition_failed_binding_does_not_stop_the_others(broker, start_bridged, uid, tmp_path):
    """A queue that exists with other arguments: one clear error for that binding; the other keeps flowing."""
    exchange = f"test.rel.{uid}"
    bad_queue, good_queue = f"bridged.test.{uid}.bad", f"bridged.test.{uid}.good"
    broker.queues.update({bad_queue, good_queue})
    broker.exchanges.add(exchange)
    broker.channel.queue_declare(bad_queue, durable=True, auto_delete=False, arguments={"x-message-ttl": 1000})
    out = tmp_path / "good.log"
    config = base_config({"f": {"type": "file", "path": str(out)}}, {
        "bad": {"exchange": exchange, "exchange_type": "fanout", "queue": bad_queue, "sink": "f"},
        "good": {"exchange": exchange, "exchange_type": "fanout", "queue": good_queue, "sink": "f"},
    })  # fmt: skip
    bridged = start_bridged(config)
    bridged.wait_event("consuming", binding="good")
    bridged.wait_event("broker_refused", binding="bad")
    refused = next(e for e in bridged.events() if e["event"] == "broker_refused")
    assert "PRECONDITION_FAILED" in refused["reason"] and "x-message-ttl" in refused["reason"]
    assert "bindings.bad.durable, auto_delete, exclusive and queue_arguments" in refused["reason"]
    assert refused["retry_in"] == config["reconnect"]["max_delay"]
    for i in range(100):
        broker.publish(exchange, "", f"m{i}".encode())
    assert wait_lines(out, 100) == [f"m{i}" for i in range(100)]
    record("queue exists with other arguments (PRECONDITION_FAILED)", reason=refused["reason"][:120],
           other_binding_delivered=100)  # fmt: skip


def test_a_sink_file_that_is_a_symlink_holds_everything_until_it_is_a_file(broker, start_bridged, uid, tmp_path):
    """A file sink whose path is a symbolic link (here to /dev/full) is never followed: the batch is held, nothing
    acked; once the path names a regular file, all arrive. (A really full disk: test_disk_full.py.)"""
    exchange, queue, _, config = _setup(broker, uid, tmp_path)
    path = tmp_path / "full.log"
    path.symlink_to("/dev/full")
    config["sinks"]["f"]["path"] = str(path)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    for i in range(50):
        broker.publish(exchange, "", f"m{i}".encode())
    bridged.wait_event("sink_failed", count=2)
    reason = next(e for e in bridged.events() if e["event"] == "sink_failed")["reason"]
    assert "a symbolic link (bridged never follows one)" in reason
    assert rabbit_unacked(queue) == 50
    path.unlink()  # the link is gone: the path now names a regular file
    lines = wait_lines(path, 50)
    assert set(lines) == {f"m{i}" for i in range(50)} and len(lines) == 50
    record("file sink path is a symbolic link (to /dev/full)", sent=50, lost=0, duplicates=len(lines) - 50,
           reason=reason)  # fmt: skip


def rabbit_unacked(queue: str) -> int:
    return sum(queue_counts(queue))


def test_log_file_deleted_or_renamed_without_hup(broker, start_bridged, uid, tmp_path):
    """Deleted: the next batch recreates the file. Renamed: the path is created again within seconds."""
    exchange, _, out, config = _setup(broker, uid, tmp_path)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    broker.publish(exchange, "", b"one")
    wait_lines(out, 1)
    out.unlink()
    broker.publish(exchange, "", b"two")
    assert wait_lines(out, 1) == ["two"]
    out.rename(tmp_path / "renamed.log")
    broker.publish(exchange, "", b"three")
    time.sleep(3)
    broker.publish(exchange, "", b"four")
    wait_lines(out, 1)
    everything = read_lines(tmp_path / "renamed.log") + read_lines(out)
    assert everything == ["two", "three", "four"]
    assert read_lines(out) == ["four"]
    record("log file deleted, then renamed, without HUP", sent=4, lost=0)


def test_redelivered_too_often_goes_to_the_dead_letter_exchange(broker, start_bridged, uid, tmp_path):
    """A message with x-delivery-count above max_redeliveries is rejected to the DLX, logged; the rest flow."""
    exchange, queue = f"test.rel.{uid}", f"bridged.test.{uid}"
    dlx, dead = f"test.rel.{uid}.dlx", f"test.rel.{uid}.dead"
    broker.queues.update({queue, dead})
    broker.exchanges.update({exchange, dlx})
    broker.declare_exchange(dlx, "fanout")
    broker.channel.queue_declare(dead, durable=True, auto_delete=False)
    broker.channel.queue_bind(dead, dlx, "")
    arguments = {"x-queue-type": "quorum", "x-dead-letter-exchange": dlx}
    broker.declare_exchange(exchange, "fanout")
    broker.channel.queue_declare(queue, durable=True, auto_delete=False, arguments=arguments)
    broker.channel.queue_bind(queue, exchange, "")
    broker.publish(exchange, "", b"poison", message_id="poison-1")
    for _ in range(4):  # a crash loop, as the broker sees it: delivered, never acked, requeued
        message = None
        while message is None:
            message = broker.channel.basic_get(queue)
        broker.channel.basic_reject(message.delivery_tag, requeue=True)
    broker.publish(exchange, "", b"fine")
    out = tmp_path / "out.log"
    config = base_config({"f": {"type": "file", "path": str(out)}}, {
        "b": {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sink": "f",
              "queue_arguments": arguments, "max_redeliveries": 3},
    })  # fmt: skip
    bridged = start_bridged(config)
    bridged.wait_event("message_dead_lettered")
    event = next(e for e in bridged.events() if e["event"] == "message_dead_lettered")
    assert event["message_id"] == "poison-1" and event["redeliveries"] == 4
    assert wait_lines(out, 1) == ["fine"]
    wait_until(lambda: broker.channel.basic_get(dead, no_ack=True), 10, "the poison message in the DLX queue")
    record("poison message (x-delivery-count 4 > max_redeliveries 3)", dead_lettered=1, others_delivered=1)


def test_fifty_bindings_one_misconfigured(broker, start_bridged, uid, tmp_path):
    """50 bindings on one broker, one refused by it: the 49 others deliver everything."""
    exchange = f"test.rel.{uid}"
    broker.declare_exchange(exchange, "direct")
    bad = f"bridged.test.{uid}.b0"
    broker.channel.queue_declare(bad, durable=False, auto_delete=False)  # bridged wants durable: refused
    bindings = {f"b{i}": {"exchange": exchange, "exchange_type": "direct", "routing_keys": [f"k{i}"],
                          "queue": f"bridged.test.{uid}.b{i}", "sink": "f"} for i in range(50)}  # fmt: skip
    broker.queues.update(b["queue"] for b in bindings.values())
    out = tmp_path / "out.log"
    bridged = start_bridged(base_config({"f": {"type": "file", "path": str(out)}}, bindings))
    bridged.wait_event("consuming", count=49, timeout=60)
    bridged.wait_event("broker_refused", binding="b0")
    started = time.monotonic()
    per_binding = 200
    for n in range(per_binding):
        for i in range(1, 50):
            broker.publish(exchange, f"k{i}", f"{i}-{n}".encode())
    lines = wait_lines(out, 49 * per_binding, timeout=120)
    elapsed = time.monotonic() - started
    assert set(lines) == {f"{i}-{n}" for i in range(1, 50) for n in range(per_binding)}
    record("50 bindings, one refused by the broker", delivered=len(lines), seconds=round(elapsed, 1))


def test_amqp_client_sees_no_unacked_after_sigterm_under_load(broker, start_bridged, uid, tmp_path):
    """SIGTERM while a stream flows: exit 0, and every message is either written or back in the queue."""
    exchange, _queue, out, config = _setup(broker, uid, tmp_path)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    publisher = StreamPublisher(exchange, "", 10_000, uid)
    publisher.start()
    wait_until(lambda: len(read_lines(out)) > 2000, 60, "progress")
    bridged.signal(signal.SIGTERM)
    assert bridged.proc.wait(15) == 0
    publisher.join(120)
    rest = tmp_path / "rest.log"
    bridged = start_bridged({**config, "sinks": {"f": {"type": "file", "path": str(rest)}}})
    figures = wait_all_written(publisher.confirmed, [out, rest], 60)
    record("SIGTERM under load, then restart", **figures)
    assert figures["lost"] == 0 and figures["duplicates"] == 0
