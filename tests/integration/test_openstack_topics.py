"""Lossless OpenStack capture (etc/openstack-topics.yaml) and what waiting for services costs the broker.

Topic mode: every service also sends to bridged's topic and declares its
queues itself, so a notification is never sent before a queue exists. The
tests run real oslo.messaging notifiers and RPC against a fresh vhost, with
bridged started first (as after a controller reboot), and restart the
broker (stop_app, and the whole node in the slow test) while services send.
"""

from __future__ import annotations

import json
import time
import zlib
from datetime import datetime
from pathlib import Path

import amqp
import pytest

from bridged.backoff import PROBE_FAST, PROBE_SLOW
from bridged.sinks.syslogmsg import DEFAULT_MAX_SIZE
from tests.integration.conftest import (
    BROKER_HOST,
    base_config,
    rabbitmqctl,
    restart_broker_node,
    start_broker_node,
    tool,
    wait_until,
)
from tests.integration.openstack import (
    BRIDGED_TOPICS,
    DRIVERS,
    PRIORITIES,
    SERVICES,
    Cloud,
    SteadySender,
    captured,
    missing,
    openstack_config,
    rpc_call_answers,
)
from tests.integration.reliability import record
from tests.integration.servers import Rsyslog, needs_rsyslog

TOPICS_CONFIG = "etc/openstack-topics.yaml"
# What the slow restart test streams: five services at 20 notifications a second each.
STREAMING = ("nova", "glance", "neutron", "cinder", "keystone")
RATE = 20.0


def bridged_env(vhost: str) -> dict[str, str]:
    return {"BRIDGED_BROKER_URL": f"amqp://guest:guest@{BROKER_HOST}/{vhost}"}


def queues(vhost: str) -> set[str]:
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "-p", vhost, "name")
    return {line.strip() for line in out.splitlines() if line.strip()}


def notify_failures(errors: list[str]) -> list[str]:
    """oslo.messaging logs a notification it gave up on (its reconnect chatter is no failure)."""
    return [line for line in errors if "Could not send notification" in line]


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_topic_mode_captures_every_notification_from_the_first_one(vhost, tmp_path, start_bridged, oslo_errors):
    """Fresh broker, bridged first, services send at once (no warm-up): every notification is in its file."""
    config = openstack_config(tmp_path, TOPICS_CONFIG)
    config_path = tmp_path / "topics.yaml"
    config_path.write_text(json.dumps(config))
    check = tool("--config", str(config_path), "--check", "--connect", env=bridged_env(vhost))
    assert check.returncode == 0, check.stderr
    assert "not declared yet" in check.stderr and "bindings.info.queue" in check.stderr
    bridged = start_bridged(config, env=bridged_env(vhost))
    bridged.wait_event("queue_missing", count=len(config["bindings"]))
    assert not queues(vhost), "bridged declared a queue"
    cloud = Cloud(vhost, topic_mode=True)
    try:
        cloud.notify_all("first")  # the services' first notifications, at once
        wait_until(lambda: not missing(cloud, tmp_path, "first"), 60, "every notification in its service's file")
        assert len(cloud.sent) == sum(len(t) for t in SERVICES.values()) * len(PRIORITIES) * len(DRIVERS)
        assert not oslo_errors.records, oslo_errors.records
        assert rpc_call_answers(cloud.url)
        # ceilometer's notifications.<priority> queues still get their copy: bridged took nothing of theirs
        assert {f"notifications.{p}" for p in PRIORITIES} <= queues(vhost)
        expected = {f"{topic}.{p}" for topic in BRIDGED_TOPICS.values() for p in PRIORITIES}
        assert expected <= queues(vhost)
        assert bridged.count("queue_found") == len(config["bindings"])
        # the queues are the services': a policy bounds them, and --check --connect says so
        rabbitmqctl("set_policy", "-p", vhost, "--apply-to", "queues", "bridged-bounded", r"^bridged(_versioned)?\.",
                    '{"max-length": 1000000, "message-ttl": 86400000}')  # fmt: skip
        check = tool("--config", str(config_path), "--check", "--connect", env=bridged_env(vhost))
        assert check.returncode == 0 and "policy" not in check.stderr and "not declared" not in check.stderr, (
            check.stderr
        )
    finally:
        cloud.close()


def test_zero_touch_mode_is_back_within_a_second_of_the_broker_and_of_each_exchange(vhost, tmp_path, start_bridged):
    """etc/openstack.yaml: after start_app bridged reconnects at once and binds nova's exchange within a poll."""
    bridged = start_bridged(openstack_config(tmp_path), env=bridged_env(vhost))
    cloud = Cloud(vhost, services=("nova",))
    try:
        cloud.warm_up("nova")
        bridged.wait_event("consuming", binding="nova")
        waits = bridged.count("exchange_missing", binding="nova")
        rabbitmqctl("stop_app")
        bridged.wait_event("reconnect_scheduled", binding="nova")
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        back = time.time()
        bridged.wait_event("exchange_missing", count=waits + 1, binding="nova")  # connected again, nova not back yet
        reconnected = event_time([e for e in bridged.events() if e["event"] == "exchange_missing"
                                  and e.get("binding") == "nova"][-1]) - back  # fmt: skip
        cloud.warm_up("nova")  # nova's next notification declares its exchange again
        declared = time.time()
        bridged.wait_event("consuming", count=2, binding="nova")
        bound = event_time(
            [e for e in bridged.events() if e["event"] == "consuming" and e.get("binding") == "nova"][-1]
        )
        print(f"\nreconnected {reconnected:.2f} s after start_app returned; bound {bound - declared:.2f} s after the "
              f"exchange came back (checked every {PROBE_FAST} s)")  # fmt: skip
        assert reconnected < 1.0 and bound - declared < 1.0
        assert bridged.count("broker_refused") == 0
    finally:
        cloud.close()


def test_compressed_notifications_are_written_readable_and_redacted(vhost, tmp_path, start_bridged, broker):
    """kombu_compression gzip, bzip2 and lzma from real notifiers; an older publisher's token; corrupt; a bomb."""
    bridged = start_bridged(openstack_config(tmp_path), env=bridged_env(vhost))
    clouds = {codec: Cloud(vhost, compression=codec, services=("nova",)) for codec in ("gzip", "bzip2", "lzma")}
    try:
        for cloud in clouds.values():
            cloud.warm_up("nova")
        bridged.wait_event("consuming", binding="nova")
        for codec, cloud in clouds.items():
            cloud.notify("nova", f"compressed:{codec}", context={"auth_token": "t", "request_id": "r"})
        publisher = _Publisher(vhost)
        try:
            token = "gAAAAABl-live-keystone-token-0123456789"
            old = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(
                {"event_type": "compute.x", "priority": "INFO", "payload": {"id": "compressed:old"},
                 "_context_auth_token": token})})  # fmt: skip
            publisher.compressed(old.encode(), "gzip")
            publisher.raw(b"\x78\x9c broken", {"compression": "application/x-gzip"})
            publisher.raw(zlib.compress(b"\0" * (65 * 1024 * 1024), 9), {"compression": "application/x-gzip"})
        finally:
            publisher.close()
        nova = tmp_path / "logs" / "nova.log"
        wait_until(lambda: len(nova.read_text().splitlines()) >= 6 if nova.exists() else False, 30, "6 lines")
        lines = [json.loads(line) for line in nova.read_text().splitlines()]
        ids = [line.get("payload", {}).get("id") for line in lines if isinstance(line.get("payload"), dict)]
        assert {"compressed:gzip", "compressed:bzip2", "compressed:lzma", "compressed:old"} <= set(ids)
        assert token not in nova.read_text()
        marked = [line["bridged_error"] for line in lines if "bridged_error" in line]
        assert len(marked) == 2 and marked[0].startswith("corrupt zlib data"), marked
        assert "inflates to more than" in marked[1]
    finally:
        for cloud in clouds.values():
            cloud.close()


class _Publisher:
    """kombu, as an older oslo.messaging publisher: compression through kombu itself, or raw bytes with a header."""

    def __init__(self, vhost: str) -> None:
        from kombu import Connection, Exchange, Producer

        self.conn = Connection(f"amqp://guest:guest@{BROKER_HOST}/{vhost}")
        self.producer = Producer(self.conn.channel(), exchange=Exchange("nova", "topic", durable=False))

    def compressed(self, body: bytes, codec: str) -> None:
        self.producer.publish(body, routing_key="notifications.info", compression=codec,
                              content_type="application/json", content_encoding="utf-8")  # fmt: skip

    def raw(self, body: bytes, headers: dict) -> None:
        self.producer.publish(body, routing_key="notifications.info", headers=headers,
                              content_type="application/octet-stream", content_encoding="binary")  # fmt: skip

    def close(self) -> None:
        self.conn.release()


def _notification(size: int, index: int) -> bytes:
    inner = {"event_type": "compute.instance.update", "priority": "INFO", "publisher_id": "nova-compute.ctl1",
             "payload": {"id": index, "pad": "x" * size}}  # fmt: skip
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def test_a_stock_rsyslog_keeps_every_record_valid_json(broker, start_bridged, uid, tmp_path):
    """3 KB, 9 KB and 70 KB notifications through rsyslog's default limits (unix socket and UDP): each valid JSON."""
    needs_rsyslog()
    rsyslog = Rsyslog(tmp_path, ("unix", "udp"))
    try:
        exchange, queue = f"test.{uid}", f"bridged.test.{uid}"
        broker.exchanges.add(exchange)
        broker.queues.add(queue)
        sinks = {"local": {"type": "syslog", "address": str(rsyslog.socket_path)},
                 "udp": {"type": "syslog", "address": f"udp://127.0.0.1:{rsyslog.udp_port}"}}  # fmt: skip
        binding = {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sinks": ["local", "udp"],
                   "format": "oslo"}  # fmt: skip
        bridged = start_bridged(base_config(sinks, {"b": binding}))
        bridged.wait_event("consuming")
        sizes = [3_000, 9_000, 70_000] * 3
        for i, size in enumerate(sizes):
            broker.publish(exchange, "", _notification(size, i))
        wait_until(lambda: len(rsyslog.records()) >= 2 * len(sizes), 30, "every record at rsyslog")
        for input_name in ("imuxsock", "imudp"):
            messages = rsyslog.messages(input_name)
            assert len(messages) == len(sizes)
            records = [json.loads(message.lstrip()) for message in messages]  # each valid JSON
            for size, rec in zip(sizes, records, strict=True):
                if size < DEFAULT_MAX_SIZE:
                    assert len(rec["payload"]["pad"]) == size
                else:
                    assert rec["bridged_truncated"] is True
    finally:
        rsyslog.stop()


@pytest.mark.slow
def test_topic_mode_loses_nothing_across_broker_restarts(vhost, tmp_path, start_bridged, oslo_errors):
    """5 services at 20/s each through stop_app/start_app and a whole node restart: lost 0, notify failures 0."""
    config = openstack_config(tmp_path, TOPICS_CONFIG)
    bridged = start_bridged(config, env=bridged_env(vhost))
    cloud = Cloud(vhost, topic_mode=True, retry=None, services=STREAMING)
    senders = [SteadySender(cloud, service, RATE, "stream") for service in STREAMING]
    node_running = True
    try:
        for sender in senders:
            sender.start()
        bridged.wait_event("consuming", count=len(PRIORITIES))  # the legacy topics; the versioned wait for nova
        time.sleep(5)
        rabbitmqctl("stop_app")
        time.sleep(2)
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        time.sleep(8)
        node_running = False
        restart_broker_node()  # the whole node, not only its app
        node_running = True
        time.sleep(8)
    finally:
        for sender in senders:
            sender.stop()
        for sender in senders:
            sender.join(120)
        if not node_running:
            start_broker_node()
    try:
        wait_until(lambda: not missing(cloud, tmp_path, "stream"), 120, "every sent notification in its file")
        sent = len(cloud.sent)
        lines = sum(len((tmp_path / "logs" / f"{s}.log").read_text().splitlines()) for s in STREAMING)
        record("openstack topic mode, stop_app and node restart", sent=sent, lost=0, duplicates=lines - sent)
        assert not notify_failures(oslo_errors.records), notify_failures(oslo_errors.records)
        assert rpc_call_answers(cloud.url)
        assert all(captured(tmp_path, s) for s in STREAMING)
    finally:
        cloud.close()


def _broker_log() -> Path:
    return next(Path("/var/log/rabbitmq").glob("rabbit@*[!_upgrade].log"))


def _memory_mb() -> float:
    out = rabbitmqctl("eval", "erlang:memory(total).")
    return int(out.strip().rstrip(".")) / 1e6


def _channels_per_connection(vhost: str) -> list[int]:
    out = rabbitmqctl("list_connections", "-q", "--no-table-headers", "vhost", "channels")
    return [int(row.split("\t")[1]) for row in out.splitlines() if row.split("\t")[0] == vhost]


@pytest.mark.slow
def test_waiting_for_services_costs_the_broker_next_to_nothing(vhost, tmp_path, start_bridged):
    """30 services configured, 5 deployed, 5 minutes: at most 2 channels a connection, memory flat, few log lines.

    An exchange declared after 4 minutes is bound within the slow check's interval.
    """
    deployed, total, minutes = 5, 30, 5
    names = [f"svc{i:02d}" for i in range(total)]
    sinks = {"f": {"type": "file", "path": str(tmp_path / "out.log")}}
    bindings = {name: {"exchange": name, "exchange_declare": "passive", "routing_keys": ["notifications.*"],
                       "sink": "f"} for name in names}  # fmt: skip
    config = base_config(sinks, bindings)
    config["broker"]["url"] = f"amqp://guest:guest@{BROKER_HOST}/{vhost}"
    publisher = amqp.Connection(BROKER_HOST, userid="guest", password="guest", virtual_host=vhost)
    publisher.connect()
    channel = publisher.channel()
    for name in names[:deployed]:
        channel.exchange_declare(name, "topic", durable=False, auto_delete=False)
    bridged = start_bridged(config)
    bridged.wait_event("exchange_missing", count=total - deployed)
    started = time.monotonic()
    memory, channels = [_memory_mb()], []
    checks: dict[int, int] = {}  # minute -> the broker's NOT_FOUND errors in this vhost so far
    late, declared_late = names[-1], 0.0
    while (elapsed := time.monotonic() - started) < minutes * 60:
        channels.extend(_channels_per_connection(vhost))
        checks[int(elapsed // 60)] = _not_found_errors(vhost)
        if not declared_late and elapsed >= (minutes - 1) * 60:
            channel.exchange_declare(late, "topic", durable=False, auto_delete=False)
            declared_late = time.time()
        memory.append(_memory_mb())
        time.sleep(5)
    checks[minutes] = _not_found_errors(vhost)
    publisher.collect()
    found = [e for e in bridged.events() if e["event"] == "exchange_found" and e.get("binding") == late]
    assert found, "the exchange declared late was never bound"
    bound_after = event_time(found[0]) - declared_late
    missing_count = total - deployed
    # after the first minutes (PROBE_FAST_SPELL, then the doubling up to PROBE_SLOW): the steady rate
    steady = (checks[minutes] - checks[2]) / (minutes - 2) / missing_count
    record("30 services configured, 5 deployed, 5 minutes", channels_max=max(channels),
           memory_mb=[round(memory[0]), round(memory[-1])], checks_per_minute_per_missing=round(steady, 1),
           broker_log_lines_per_check=2, bound_after=round(bound_after, 2))  # fmt: skip
    print(f"\nchannels per connection at most {max(channels)}; broker memory {memory[0]:.0f} -> {memory[-1]:.0f} MB; "
          f"404s per minute by minute: {checks}; after minute 2, {steady:.1f} a minute per missing exchange (each "
          f"logs 2 broker lines); the late exchange bound {bound_after:.1f} s after it appeared")  # fmt: skip
    assert max(channels) <= 2
    assert memory[-1] < memory[0] * 1.25 + 20  # flat: no channel or error state piling up
    assert steady <= 60 / PROBE_SLOW + 1
    assert bound_after <= PROBE_SLOW + 1


def _not_found_errors(vhost: str) -> int:
    """The broker's channel errors for a passive declare of something missing in *vhost* (2 log lines each)."""
    log = next(p for p in Path("/var/log/rabbitmq").glob("rabbit@*.log") if "_upgrade" not in p.name)
    text = log.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "caused a channel exception not_found" in line and vhost in line)


def _memory_mb() -> float:
    out = rabbitmqctl("eval", "erlang:memory(total).")
    return int(out.strip().rstrip(".")) / 1e6


def _channels_per_connection(vhost: str) -> list[int]:
    out = rabbitmqctl("list_connections", "-q", "--no-table-headers", "vhost", "channels")
    return [int(row.split("\t")[1]) for row in out.splitlines() if row.split("\t")[0] == vhost]
