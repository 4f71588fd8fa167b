"""Faults from the core issue: sink failures, dropped connections, broker restarts."""

from __future__ import annotations

import signal
import threading
import time

from tests.integration.conftest import base_config, queue_counts, rabbitmqctl, read_lines, wait_lines, wait_until


def _start(broker, start_bridged, uid, tmp_path, path, **binding):
    """Start bridged on a fresh fanout exchange and queue; returns (bridged, exchange, queue) once consuming."""
    exchange, queue, config = _config(uid, tmp_path, path, **binding)
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    return bridged, exchange, queue


def _assert_resumes(broker, bridged, exchange, path):
    """After a broker-side fault: reconnected, the next message follows the one before, still running."""
    broker.reconnect()
    broker.publish(exchange, "", b"after")
    assert wait_lines(path, 2) == ["before", "after"]
    assert bridged.proc.poll() is None


def _config(uid, tmp_path, path, **binding):
    queue = f"bridged.test.{uid}"
    exchange = f"test.faults.{uid}"
    bindings = {"b": {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sink": "f", **binding}}
    return exchange, queue, base_config({"f": {"type": "file", "path": str(path)}}, bindings)


def test_failing_sink_holds_acks_and_delivers_everything_once_it_recovers(broker, start_bridged, uid, tmp_path):
    """While the file cannot be written nothing is acked; afterwards every message arrives."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the log directory should be\n")
    path = blocker / "out.log"
    bridged, exchange, queue = _start(broker, start_bridged, uid, tmp_path, path)
    for i in range(20):
        broker.publish(exchange, "", f"m{i}".encode())
    bridged.wait_event("sink_failed", count=2)
    ready, unacked = queue_counts(queue)
    assert ready + unacked == 20, "a message was acked although the sink never took it"
    assert bridged.proc.poll() is None
    blocker.unlink()
    lines = wait_lines(path, 20)
    assert set(lines) == {f"m{i}" for i in range(20)}
    wait_until(lambda: queue_counts(queue) == (0, 0), 15, "queue fully acked")


def test_recovers_after_close_all_connections(broker, start_bridged, uid, tmp_path):
    """rabbitmqctl close_all_connections: bridged reconnects and keeps delivering."""
    path = tmp_path / "out.log"
    bridged, exchange, _queue = _start(broker, start_bridged, uid, tmp_path, path)
    broker.publish(exchange, "", b"before")
    wait_lines(path, 1)
    rabbitmqctl("close_all_connections", "test: forced close")
    bridged.wait_event("reconnect_scheduled")
    bridged.wait_event("consuming", count=2)
    _assert_resumes(broker, bridged, exchange, path)


def test_broker_restart_redeclares_a_non_durable_queue(broker, start_bridged, uid, tmp_path):
    """stop_app/start_app wipes a non-durable queue and exchange; the next connect declares them again."""
    path = tmp_path / "out.log"
    bridged, exchange, _queue = _start(
        broker, start_bridged, uid, tmp_path, path, durable=False, exchange_durable=False
    )
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


def test_sigterm_mid_stream_acks_exactly_what_was_written(broker, start_bridged, uid, tmp_path):
    """After SIGTERM, lines written and messages left in the queue partition the stream: none lost, none both."""
    path = tmp_path / "out.log"
    bridged, exchange, queue = _start(broker, start_bridged, uid, tmp_path, path)
    total = 20_000
    publisher = threading.Thread(target=lambda: [broker.publish(exchange, "", f"m{i}".encode()) for i in range(total)])
    publisher.start()
    wait_until(lambda: len(read_lines(path)) > 2000, 60, "delivery to be under way")
    bridged.signal(signal.SIGTERM)
    started = time.monotonic()
    assert bridged.proc.wait(15) == 0
    assert time.monotonic() - started < 5
    publisher.join(120)
    written = read_lines(path)
    assert len(written) == len(set(written)), "a line was written twice"
    remaining = [body.decode() for body in broker.get_all(queue)]
    assert set(written).isdisjoint(remaining), "a written message was left unacked"
    assert remaining, "the stream ended before SIGTERM: the test proved nothing"
    assert set(written) | set(remaining) == {f"m{i}" for i in range(total)}


def test_second_sigterm_exits_at_once(broker, start_bridged, uid, tmp_path):
    """A stop that hangs (a syslog server that never reads) is cut short by a second SIGTERM."""
    import socket as socket_module

    server = socket_module.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        exchange, queue = f"test.faults.{uid}", f"bridged.test.{uid}"
        broker.queues.add(queue)
        broker.exchanges.add(exchange)
        config = base_config(
            # max_size above the message size: 12 MB really goes to the socket, more than its buffers hold
            {"s": {"type": "syslog", "address": f"tcp://127.0.0.1:{port}", "timeout": 60, "max_size": 65536}},
            {"b": {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sink": "s"}},
        )
        bridged = start_bridged(config)
        bridged.wait_event("consuming")
        big = b"x" * 60_000
        for _ in range(200):  # ~12 MB: far more than the socket buffers hold, so the send blocks
            broker.publish(exchange, "", big)
        time.sleep(2)
        bridged.signal(signal.SIGTERM)
        bridged.wait_event("stopping")
        time.sleep(0.5)
        assert bridged.proc.poll() is None, "the first SIGTERM should wait for the blocked send"
        bridged.signal(signal.SIGTERM)
        assert bridged.proc.wait(5) == 128 + signal.SIGTERM
        # What the kernel's socket buffers took counts as sent (and was acked); the rest is requeued.
        wait_until(lambda: queue_counts(queue)[1] == 0, 15, "no message left unacknowledged")
        assert queue_counts(queue)[0] > 0
    finally:
        server.close()


def test_idle_binding_keeps_its_connection_through_heartbeats(broker, start_bridged, uid, tmp_path):
    """With heartbeat 1 s and no traffic for 8 s, the connection stays up (we send ours while idle)."""
    path = tmp_path / "out.log"
    exchange, queue, config = _config(uid, tmp_path, path)
    config["broker"]["heartbeat"] = 1
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    time.sleep(8)
    broker.publish(exchange, "", b"still here")
    assert wait_lines(path, 1) == ["still here"]
    assert bridged.count("reconnect_scheduled") == 0
    assert bridged.count("consuming") == 1
