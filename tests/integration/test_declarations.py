"""bridged never creates or alters an exchange it does not own; a refused declaration names the key to change."""

from __future__ import annotations

import socket
import time

from bridged.backoff import PROBE_FAST as EXCHANGE_POLL
from tests.integration.conftest import base_config, fanout_binding, rabbitmqctl, wait_lines, wait_until


def exchange_durability(name: str) -> str | None:
    out = rabbitmqctl("list_exchanges", "-q", "--no-table-headers", "name", "durable")
    for row in out.splitlines():
        fields = row.split("\t")
        if fields[0] == name:
            return fields[1]
    return None


def connection_channels(name: str) -> int:
    """Channels open on the connection the broker lists under client-given *name*."""
    out = rabbitmqctl("list_connections", "-q", "--no-table-headers", "client_properties", "channels")
    counts = [int(row.rsplit("\t", 1)[1]) for row in out.splitlines() if name in row]
    assert counts, f"no connection named {name}"
    return max(counts)


def test_passive_binding_waits_for_the_exchange_and_binds_soon_after_it_appears(broker, start_bridged, uid, tmp_path):
    """The exchange is checked, never declared: bridged waits (one log line) and binds within a poll of its creation."""
    exchange, queue = f"test.passive.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    out = tmp_path / "out.log"
    binding = {"exchange": exchange, "exchange_declare": "passive", "queue": queue, "sink": "f",
               "routing_keys": ["notifications.*"]}  # fmt: skip
    bridged = start_bridged(base_config({"f": {"type": "file", "path": str(out)}}, {"b": binding}))
    bridged.wait_event("exchange_missing")
    time.sleep(6 * EXCHANGE_POLL)  # several polls go by
    assert exchange_durability(exchange) is None, "bridged declared the exchange"
    assert bridged.count("exchange_missing") == 1, "the wait is logged once, not every poll"
    assert bridged.count("broker_refused") == 0 and bridged.count("reconnect_scheduled") == 0

    broker.declare_exchange(exchange, "topic", durable=False)  # as an OpenStack service declares its exchange
    declared = time.monotonic()
    bridged.wait_event("consuming")
    waited = time.monotonic() - declared
    broker.publish(exchange, "notifications.info", b"first")
    assert wait_lines(out, 1) == ["first"]
    assert exchange_durability(exchange) == "false", "the service's exchange was altered"
    assert bridged.count("exchange_found") == 1
    print(f"bound {waited:.2f} s after the exchange was declared (poll {EXCHANGE_POLL} s)")


def test_create_mode_names_the_keys_when_the_exchange_differs(broker, start_bridged, uid, tmp_path):
    """exchange_declare: create on an exchange that exists non-durable: one error naming the keys to change."""
    exchange, queue = f"test.create.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.declare_exchange(exchange, "topic", durable=False)
    binding = {
        "exchange": exchange,
        "exchange_declare": "create",
        "exchange_durable": True,
        "queue": queue,
        "sink": "f",
    }
    bridged = start_bridged(base_config({"f": {"type": "file", "path": str(tmp_path / "o.log")}}, {"nova": binding}))
    bridged.wait_event("broker_refused")
    reason = next(e for e in bridged.events() if e["event"] == "broker_refused")["reason"]
    assert reason.startswith(f"exchange '{exchange}' exists with other settings: make bindings.nova.exchange_type")
    assert "bindings.nova.exchange_durable" in reason and "exchange_declare: passive" in reason
    assert "inequivalent arg 'durable'" in reason
    assert exchange_durability(exchange) == "false"


def test_amq_exchanges_are_only_checked_even_in_create_mode(broker, start_bridged, uid, tmp_path):
    """amq.* belong to the broker: a binding on amq.topic consumes without declaring it."""
    queue = f"bridged.test.{uid}"
    broker.queues.add(queue)
    out = tmp_path / "o.log"
    binding = {"exchange": "amq.topic", "exchange_declare": "create", "queue": queue, "sink": "f",
               "routing_keys": [f"t.{uid}"]}  # fmt: skip
    bridged = start_bridged(base_config({"f": {"type": "file", "path": str(out)}}, {"b": binding}))
    bridged.wait_event("consuming")
    broker.publish("amq.topic", f"t.{uid}", b"via amq.topic")
    assert wait_lines(out, 1) == ["via amq.topic"]
    wait_until(lambda: bridged.count("broker_refused") == 0, 1, "no refusal")


def test_one_queue_fed_by_three_exchanges(broker, start_bridged, uid, tmp_path):
    """exchanges: a topic, a direct and a fanout exchange into one queue; one declared only later is bound then."""
    topic, direct, fanout = (f"test.multi.{uid}.{kind}" for kind in ("topic", "direct", "fanout"))
    queue = f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.declare_exchange(topic, "topic", durable=False)
    broker.declare_exchange(direct, "direct", durable=False)
    out = tmp_path / "out.log"
    binding = {
        "exchange_declare": "passive",
        "exchanges": {
            topic: {"routing_keys": ["notifications.*"]},
            direct: {"exchange_type": "direct", "routing_keys": ["audit"]},
            fanout: {"exchange_type": "fanout"},  # its service has not started yet
        },
        "queue": queue,
        "sink": "f",
    }
    bridged = start_bridged(base_config({"f": {"type": "file", "path": str(out)}}, {"all": binding}))
    bridged.wait_event("consuming")  # two of three exist: the binding consumes
    assert bridged.count("exchange_missing", exchange=fanout) == 1
    broker.publish(topic, "notifications.info", b"from topic")
    broker.publish(topic, "compute.host1", b"rpc, not bound")
    broker.publish(direct, "audit", b"from direct")
    assert wait_lines(out, 2) == ["from topic", "from direct"]
    time.sleep(6 * EXCHANGE_POLL)  # the missing one is checked several times meanwhile, on a side channel
    assert connection_channels(f"bridged all@{socket.gethostname()}") <= 2, "a channel per check (a leak)"

    broker.declare_exchange(fanout, "fanout", durable=False)
    bridged.wait_event("exchange_found", exchange=fanout)
    broker.publish(fanout, "", b"from fanout")
    assert wait_lines(out, 3)[-1] == "from fanout"
    assert exchange_durability(fanout) == "false"
    assert bridged.count("reconnect_scheduled") == 0 and bridged.count("consuming") == 1


def test_connections_are_named_and_a_shared_queue_is_reported(broker, start_bridged, uid, tmp_path):
    """Each connection says `bridged <binding>@<host>`; a second consumer on the queue is logged."""
    _exchange, queue, binding = fanout_binding(broker, uid, sink="f")
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
