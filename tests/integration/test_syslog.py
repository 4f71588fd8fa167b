"""The syslog sink against real sockets: unix datagram, UDP, TCP with octet counting."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

from tests.integration.conftest import base_config, fanout_binding, queue_counts, wait_until
from tests.integration.servers import DatagramServer

RFC5424 = re.compile(rb"<(\d+)>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (\S+) (\S+) (\d+) - - (.*)", re.S)
LOCAL = re.compile(rb"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ()(\S+)\[(\d+)\]: (.*)", re.S)  # syslog(3), no host
RFC3164 = re.compile(rb"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (\S+) (\S+)\[(\d+)\]: (.*)", re.S)


class OctetCountingServer:
    """A TCP syslog receiver that parses RFC 6587 octet-counted frames."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.messages: list[bytes] = []
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(0.2)
            buffer = b""
            with conn:
                while not self._stop:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    buffer += chunk
                    while b" " in buffer:
                        length, rest = buffer.split(b" ", 1)
                        if len(rest) < int(length):
                            break
                        self.messages.append(rest[: int(length)])
                        buffer = rest[int(length) :]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.listener.close()


def _start(broker, start_bridged, uid, sink: dict, **binding):
    exchange, queue = f"test.syslog.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    config = base_config(
        {"syslog": {"type": "syslog", **sink}},
        {"b": {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sink": "syslog", **binding}},
    )
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    return bridged, exchange, queue


def test_unix_datagram_rfc5424(broker, start_bridged, uid, tmp_path: Path):
    """Each message is one RFC 5424 datagram with the configured facility and app-name."""
    path = str(tmp_path / "log.sock")
    server = DatagramServer(socket.AF_UNIX, path)
    try:
        bridged, exchange, _ = _start(
            broker, start_bridged, uid, {"address": path, "facility": "local0", "tag": "nova", "protocol": "rfc5424"}
        )
        for i in range(5):
            broker.publish(exchange, "", f"m{i}\nx".encode())
        wait_until(lambda: len(server.messages) >= 5, 20, "5 datagrams")
        for i, message in enumerate(server.messages):
            match = RFC5424.fullmatch(message)
            assert match, message
            assert int(match.group(1)) == 16 * 8 + 6  # local0.info
            assert match.group(3) == b"nova" and int(match.group(4)) == bridged.proc.pid
            assert match.group(5) == f"m{i}\\nx".encode()
    finally:
        server.close()


def test_udp_rfc3164_and_truncation(broker, start_bridged, uid):
    """RFC 3164 over UDP; a message longer than max_size is cut with a marker, not dropped."""
    server = DatagramServer(socket.AF_INET, ("127.0.0.1", 0))
    port = server.sock.getsockname()[1]
    try:
        sink = {"address": f"udp://127.0.0.1:{port}", "protocol": "rfc3164", "max_size": 512}
        _, exchange, _ = _start(broker, start_bridged, uid, sink)
        broker.publish(exchange, "", b"short")
        broker.publish(exchange, "", "\u00e9".encode() * 2000)
        wait_until(lambda: len(server.messages) >= 2, 20, "2 datagrams")
        short, long = server.messages
        assert RFC3164.fullmatch(short).group(5) == b"short"
        assert len(long) <= 512 and long.endswith(b"...[truncated]")
        long.decode("utf-8")  # not cut inside a character
    finally:
        server.close()


def test_tcp_octet_counting_survives_a_server_restart(broker, start_bridged, uid):
    """TCP frames are octet-counted; while the server is gone nothing is acked; afterwards all arrive."""
    server = OctetCountingServer()
    port = server.port
    try:
        bridged, exchange, queue = _start(broker, start_bridged, uid, {"address": f"tcp://127.0.0.1:{port}"})
        for i in range(10):
            broker.publish(exchange, "", f"before{i}".encode())
        wait_until(lambda: len(server.messages) >= 10, 20, "10 frames")
        server.close()
        for i in range(10):
            broker.publish(exchange, "", f"during{i}".encode())
        bridged.wait_event("sink_failed")
        ready, unacked = queue_counts(queue)
        assert ready + unacked >= 9, "messages were acked while syslog was down"
        server = OctetCountingServer(port)
        during = {f"during{i}".encode() for i in range(10)}
        received = lambda: {RFC5424.fullmatch(m).group(5) for m in server.messages}  # noqa: E731
        wait_until(lambda: during <= received(), 30, "the messages sent during the outage")
        assert bridged.proc.poll() is None
    finally:
        server.close()


def test_missing_unix_socket_holds_acks_until_it_appears(broker, start_bridged, uid, tmp_path: Path):
    """A missing /dev/log-style socket is a sink failure, not a crash; delivery resumes when it appears."""
    path = str(tmp_path / "absent.sock")
    bridged, exchange, queue = _start(broker, start_bridged, uid, {"address": path})
    for i in range(3):
        broker.publish(exchange, "", f"m{i}".encode())
    bridged.wait_event("sink_failed")
    assert sum(queue_counts(queue)) == 3
    server = DatagramServer(socket.AF_UNIX, path)
    try:
        wait_until(lambda: len(server.messages) >= 3, 30, "3 datagrams")
        assert [LOCAL.fullmatch(m).group(5) for m in server.messages[:3]] == [b"m0", b"m1", b"m2"]
    finally:
        server.close()


def test_tcp_syslog_sends_each_batch_at_once_on_one_connection(broker, start_bridged, uid):
    """Twenty batches in a row go out well within one sink timeout, without reconnecting."""
    server = OctetCountingServer()
    try:
        timeout = 5.0
        exchange, _, binding = fanout_binding(broker, uid, sink="s")
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
