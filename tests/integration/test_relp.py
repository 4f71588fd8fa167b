"""The RELP sink against a real rsyslogd with imrelp, with a TCP syslog sink beside it for comparison."""

from __future__ import annotations

import signal
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bridged.supervisor import STOP_DEADLINE
from tests.integration.conftest import base_config, queue_counts, tool, wait_until
from tests.integration.reliability import StreamPublisher
from tests.integration.servers import Rsyslog, SlowRelpServer, needs_rsyslog

# The sinks' timeout in these tests, and the reconnect ceiling of base_config: the
# waits below are derived from them.
SINK_TIMEOUT = 2.0
RECONNECT_MAX = 2.0


@pytest.fixture
def rsyslog(tmp_path: Path):
    needs_rsyslog(relp=True)
    server = Rsyslog(tmp_path, ("relp", "tcp"))
    yield server
    server.stop()


# Seconds a confirming publisher may lag behind its rate on a loaded 2-core machine.
PUBLISH_SLACK = 30


def relp_config(uid: str, rsyslog: Rsyslog, tls: dict | None = None) -> tuple[dict, str, list[str]]:
    """A RELP binding and (without TLS) a TCP syslog binding beside it: each its own queue on one exchange."""
    exchange = f"test.relp.{uid}"
    relp = {"type": "relp", "address": f"tcp://{'localhost' if tls else '127.0.0.1'}:{rsyslog.relp_port}",
            "timeout": SINK_TIMEOUT, **({"tls": tls} if tls else {})}  # fmt: skip
    sinks = {
        "relp": relp,
        "tcp": {"type": "syslog", "address": f"tcp://127.0.0.1:{rsyslog.tcp_port}", "timeout": SINK_TIMEOUT},
    }
    bindings = {name: {"exchange": exchange, "exchange_type": "direct", "routing_keys": ["k"],
                       "queue": f"bridged.test.{uid}.{name}", "sink": name, "format": "raw"}
                for name in (["relp"] if tls else ["relp", "tcp"])}  # fmt: skip
    return base_config(sinks, bindings), exchange, [b["queue"] for b in bindings.values()]


def tally(received: list[str], expected: set[str]) -> tuple[int, int]:
    """(lost, duplicated) of *expected* in *received*."""
    counts = Counter(received)
    return len(expected - counts.keys()), sum(n - 1 for n in counts.values() if n > 1)


def test_relp_loses_nothing_over_two_rsyslog_restarts(broker, uid, start_bridged, rsyslog):
    """9,000 messages at 3,000/s while rsyslog is stopped (TERM) and crashed (KILL): RELP loses none.

    A TCP syslog binding on its own copy of the stream gets the same restarts, for comparison.
    """
    config, exchange, queues = relp_config(uid, rsyslog)
    broker.exchanges.add(exchange)
    broker.queues.update(queues)
    bridged = start_bridged(config)
    bridged.wait_event("consuming", count=2)
    count, rate, gap = 9000, 3000.0, 1.0
    publisher = StreamPublisher(exchange, "k", count, rate=rate, name="m-{:06d}".format)
    publisher.start()
    stream = count / rate
    for fraction, signum in ((1 / 3, signal.SIGTERM), (2 / 3, signal.SIGKILL)):
        # the publisher confirms each message in turn: on a loaded machine it runs below its rate
        wait_until(lambda f=fraction: len(publisher.confirmed) >= count * f, 4 * stream + PUBLISH_SLACK,
                   f"{fraction:.0%} published")  # fmt: skip
        rsyslog.stop(signum)
        time.sleep(gap)
        rsyslog.start()
    publisher.join(4 * stream)
    expected = {f"m-{i:06d}" for i in range(count)}
    # After the stream: each restart costs at most a gap, a sink timeout and a reconnect wait.
    settle = stream + 2 * (gap + SINK_TIMEOUT + RECONNECT_MAX) + 30
    wait_until(lambda: expected <= set(rsyslog.messages("imrelp")), settle, "every message through RELP")
    for queue in queues:
        wait_until(lambda q=queue: queue_counts(q) == (0, 0), settle, f"{queue} drained and acked")
    relp_lost, relp_dup = tally(rsyslog.messages("imrelp"), expected)
    tcp_lost, tcp_dup = tally(rsyslog.messages("imtcp"), expected)
    resent = sum(e.get("frames", 0) for e in bridged.events() if e.get("event") == "relp_unanswered")
    print(f"\nRELP: sent {count}, lost {relp_lost}, duplicated {relp_dup} (frames resent {resent}); "
          f"TCP syslog: lost {tcp_lost}, duplicated {tcp_dup}")  # fmt: skip
    assert relp_lost == 0
    assert relp_dup <= resent  # a duplicate only ever comes from a frame sent again after a lost connection
    assert bridged.count("sink_failed", binding="relp") >= 1  # the restarts did hit the stream


@pytest.mark.slow
def test_relp_holds_messages_while_rsyslog_is_down_for_30_seconds(broker, uid, start_bridged, rsyslog):
    """rsyslog down for 30 s: nothing is acked meanwhile (the queue holds all 500), then all arrive, none lost."""
    config, exchange, queues = relp_config(uid, rsyslog)
    queue = queues[0]
    broker.exchanges.add(exchange)
    broker.queues.update(queues)
    bridged = start_bridged(config)
    bridged.wait_event("consuming", count=2)
    for i in range(100):
        broker.publish(exchange, "k", f"m-{i:06d}")
    wait_until(lambda: len(set(rsyslog.messages("imrelp"))) >= 100, 30, "the first 100")
    rsyslog.stop()
    for i in range(100, 600):
        broker.publish(exchange, "k", f"m-{i:06d}")
    down = time.monotonic()
    while time.monotonic() - down < 30:
        time.sleep(1)
        ready, unacked = queue_counts(queue)
        assert ready + unacked == 500, (ready, unacked)  # held, not acked
    assert len(set(rsyslog.messages("imrelp"))) == 100
    assert bridged.count("sink_failed", binding="relp") >= 2
    rsyslog.start()
    expected = {f"m-{i:06d}" for i in range(600)}
    settle = SINK_TIMEOUT + RECONNECT_MAX + 30
    wait_until(lambda: expected <= set(rsyslog.messages("imrelp")), settle, "all 600 after the outage")
    wait_until(lambda: queue_counts(queue) == (0, 0), settle, "the queue drained and acked")
    assert tally(rsyslog.messages("imrelp"), expected)[0] == 0


def test_relp_over_mutual_tls(broker, uid, start_bridged, tmp_path, certificates):
    """TLS with the broker's tls keys: the server checks our client certificate, we check its chain and name."""
    needs_rsyslog(relp=True)
    tls = {"ca": str(certificates / "ca.pem"), "cert": str(certificates / "server.pem"),
           "key": str(certificates / "server.key"), "peer": "bridged"}  # fmt: skip
    server = Rsyslog(tmp_path, ("relp", "tcp"), tls=tls)
    try:
        tls = {"ca_file": str(certificates / "ca.pem"), "cert_file": str(certificates / "client.pem"),
               "key_file": str(certificates / "client.key")}  # fmt: skip
        config, exchange, queues = relp_config(uid, server, tls)
        broker.exchanges.add(exchange)
        broker.queues.update(queues)
        bridged = start_bridged(config)
        bridged.wait_event("consuming")
        for i in range(20):
            broker.publish(exchange, "k", f"m-{i:06d}")
        expected = {f"m-{i:06d}" for i in range(20)}
        wait_until(lambda: expected <= set(server.messages("imrelp")), 30, "20 messages over TLS")
        bridged.stop()

        wrong = {**tls, "ca_file": str(certificates / "other-ca.pem")}
        config, _, _ = relp_config(uid, server, wrong)
        config_path = tmp_path / "wrong-ca.yaml"
        config_path.write_text(yaml.safe_dump(config))
        result = tool("--config", str(config_path), "--check", "--connect")
        assert result.returncode == 2
        assert "sinks.relp: cannot open a RELP session with" in result.stderr
        assert "CERTIFICATE_VERIFY_FAILED" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    finally:
        server.stop()


def _slow_relp_config(uid: str, server_port: int, heartbeat: float) -> tuple[dict, str]:
    exchange, queue = f"test.slowrelp.{uid}", f"bridged.test.{uid}"
    sinks = {"relp": {"type": "relp", "address": f"tcp://127.0.0.1:{server_port}"}}
    binding = {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sink": "relp"}
    config = base_config(sinks, {"b": binding})
    config["broker"]["heartbeat"] = heartbeat
    return config, exchange


@pytest.mark.slow
def test_a_slow_relp_server_is_drained_at_its_pace_without_duplicates(broker, uid, start_bridged):
    """A server answering 10 frames a second, 600 messages queued, heartbeat 10: drained at that pace, no
    reconnect, no missed heartbeat at the broker, duplicates within one window, never reported wedged."""
    server = SlowRelpServer(rate=10)
    try:
        config, exchange = _slow_relp_config(uid, server.port, heartbeat=10)
        broker.declare_exchange(exchange, "fanout")
        broker.queues.add(f"bridged.test.{uid}")
        broker.channel.queue_declare(f"bridged.test.{uid}", durable=True, auto_delete=False)
        broker.channel.queue_bind(f"bridged.test.{uid}", exchange, "")
        count = 600
        for i in range(count):
            broker.publish(exchange, "", f"m-{i:06d}")
        started = time.monotonic()
        bridged = start_bridged(config)
        wait_until(lambda: len(set(server.received)) >= count, 2 * count / server.rate + PUBLISH_SLACK,
                   "every message at the slow server")  # fmt: skip
        took = time.monotonic() - started
        wait_until(lambda: queue_counts(f"bridged.test.{uid}") == (0, 0), 30, "every message acked")
        duplicates = len(server.received) - len(set(server.received))
        print(f"\nslow RELP server (10/s): {count} in {took:.0f} s, {duplicates} duplicates, "
              f"{server.connections} connection(s)")  # fmt: skip
        assert bridged.count("reconnect_scheduled") == 0 and bridged.count("bindings_wedged") == 0
        assert server.connections == 1 and duplicates <= 128
        log = next(p for p in Path("/var/log/rabbitmq").glob("rabbit@*.log") if "_upgrade" not in p.name)
        assert f"bridged b@{socket.gethostname()}" not in "".join(
            line for line in log.read_text(errors="replace").splitlines() if "missed heartbeats" in line
        )
    finally:
        server.close()


def test_sighup_then_sigterm_during_a_slow_relp_write_stops_within_the_deadline(broker, uid, start_bridged):
    """A reload that restarts the binding while its RELP write crawls, then SIGTERM: exit 0 within the deadline."""
    server = SlowRelpServer(rate=10)
    try:
        config, exchange = _slow_relp_config(uid, server.port, heartbeat=10)
        broker.declare_exchange(exchange, "fanout")
        broker.queues.add(f"bridged.test.{uid}")
        bridged = start_bridged(config)
        bridged.wait_event("consuming")
        for i in range(300):
            broker.publish(exchange, "", f"m-{i:06d}")
        wait_until(lambda: len(server.received) >= 10, 30, "the slow write under way")
        config["sinks"]["relp"]["timeout"] = 6  # the sink changes: the reload stops the binding and closes it
        bridged.config_path.write_text(yaml.safe_dump(config))
        bridged.signal(signal.SIGHUP)
        time.sleep(0.2)
        started = time.monotonic()
        bridged.signal(signal.SIGTERM)
        code = bridged.proc.wait(STOP_DEADLINE + 10)
        took = time.monotonic() - started
        print(f"\nSIGHUP then SIGTERM during a slow RELP write: exit {code} after {took:.1f} s")
        assert code == 0 and took < STOP_DEADLINE
    finally:
        server.close()
