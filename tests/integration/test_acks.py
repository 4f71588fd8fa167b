"""Acked only what every sink took: a failing sink, a cut write, a stop, a closed output."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.integration.conftest import (
    base_config,
    fanout_binding,
    queue_counts,
    read_lines,
    start_on_fanout,
    wait_lines,
    wait_until,
)


def test_failing_sink_holds_acks_and_delivers_everything_once_it_recovers(broker, start_bridged, uid, tmp_path):
    """While the file cannot be written nothing is acked; afterwards every message arrives."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the log directory should be\n")
    path = blocker / "out.log"
    bridged, exchange, queue = start_on_fanout(broker, start_bridged, uid, path)
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


def test_sigterm_mid_stream_acks_exactly_what_was_written(broker, start_bridged, uid, tmp_path):
    """After SIGTERM, lines written and messages left in the queue partition the stream: none lost, none both."""
    path = tmp_path / "out.log"
    bridged, exchange, queue = start_on_fanout(broker, start_bridged, uid, path)
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


def test_a_stop_cuts_a_send_blocked_on_a_syslog_server_that_never_reads(broker, start_bridged, uid, tmp_path):
    """SIGTERM while a send is blocked (a TCP syslog server that never reads): the send is aborted, bridged exits 0
    within its stop deadline, and what the socket did not take goes back to the queue, nothing left unacked."""
    import socket as socket_module

    from bridged.supervisor import STOP_DEADLINE

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
        wait_until(lambda: queue_counts(queue)[1] > 0, 30, "a batch in hand, its send blocked")
        bridged.signal(signal.SIGTERM)
        assert bridged.proc.wait(STOP_DEADLINE + 5) == 0  # the sink's own timeout (60 s) is not waited for
        wait_until(lambda: queue_counts(queue)[1] == 0, 15, "no message left unacknowledged")
        assert queue_counts(queue)[0] > 0
    finally:
        server.close()


def test_second_sigterm_exits_at_once_when_a_write_cannot_be_cut(broker, uid, tmp_path):
    """stdout into a pipe nobody reads blocks a write that no abort can cut: the first SIGTERM waits for it, the
    second exits at once (128+15), and what was not acked goes back to the queue."""
    exchange, queue, binding = fanout_binding(broker, uid, sink="out")
    config_path = tmp_path / "bridged.yaml"
    config_path.write_text(json.dumps(base_config({"out": {"type": "stdout"}}, {"b": binding})))
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(config_path)],
                                stdout=subprocess.PIPE, stderr=stderr)  # fmt: skip
    try:
        wait_until(lambda: "consuming" in stderr_path.read_text(), 60, "consuming")
        for _ in range(20):  # 1.2 MB: far more than a pipe holds (64 KiB)
            broker.publish(exchange, "", b"y" * 60_000)
        wait_until(lambda: queue_counts(queue)[1] > 0, 30, "a batch in hand, its write blocked")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: '"stopping"' in stderr_path.read_text(), 30, "stopping")
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1)  # the write cannot finish while nobody reads the pipe
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 128 + signal.SIGTERM
        wait_until(lambda: queue_counts(queue)[1] == 0, 15, "no message left unacknowledged")
        assert queue_counts(queue)[0] > 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_a_partial_write_leaves_no_cut_line(broker, start_bridged, uid, tmp_path):
    """A file that stops growing mid-batch (EFBIG after a short write): the half line is cut off again at once,
    then every line arrives once, none cut, none twice."""
    exchange, _, binding = fanout_binding(broker, uid, sink="f", batch_size=50, prefetch=200)
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
    held = out.read_bytes()
    assert len(held) < limit and held.endswith(b"\n"), "a half line stayed in the file"
    resource.prlimit(bridged.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    lines = wait_lines(out, count, timeout=60)
    expected = [f"message number {i:05d} " + "x" * 15 for i in range(count)]
    assert lines == expected, "cut or duplicated lines after the partial write"


def test_closed_stdout_ends_bridged_and_leaves_the_rest_queued(broker, uid, tmp_path):
    """`bridged ... | head -1`: bridged exits (code 4) instead of failing forever; nothing unwritten is acked."""
    exchange, queue, binding = fanout_binding(broker, uid, sink="out", batch_size=1)
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
