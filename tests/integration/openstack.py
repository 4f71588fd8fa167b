"""OpenStack as the tests run it: real oslo.messaging notifiers per service, RPC, and what reached the sinks.

Two ways to capture (docs/openstack.md): zero-touch (etc/openstack.yaml,
bridged's own queues on the services' exchanges) and topic mode
(etc/openstack-topics.yaml: each service also sends to bridged's topics and
declares their queues itself).
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from tests.integration.conftest import BROKER_HOST, Bridged, rabbitmqctl, read_lines

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # oslo.service's eventlet deprecation notice
    import oslo_messaging
    from oslo_config import cfg

REPO = Path(__file__).resolve().parents[2]
# Service -> notification topics, as etc/openstack.yaml promises to capture them.
SERVICES = {
    "nova": ("notifications", "versioned_notifications"),
    "glance": ("notifications",),
    "neutron": ("notifications",),
    "cinder": ("notifications",),
    "keystone": ("notifications",),
    "heat": ("notifications",),
}
PRIORITIES = ("audit", "critical", "debug", "error", "info", "sample", "warn")
# Topic mode: each legacy topic gets bridged's beside it (the services' config, in etc/openstack-topics.yaml).
BRIDGED_TOPICS = {"notifications": "bridged", "versioned_notifications": "bridged_versioned"}
DRIVERS = ("messagingv2", "messaging")  # oslo 2.0 envelope and the bare 1.0 message
# Fast reconnects for the broker-restart test: the shipped file keeps the production defaults.
TEST_RECONNECT = {"initial_delay": 0.2, "max_delay": 2.0, "multiplier": 2.0}


def exchanges(vhost: str) -> dict[str, str]:
    """Exchange name -> durable ('true'/'false') in *vhost*, from the broker."""
    out = rabbitmqctl("list_exchanges", "-q", "--no-table-headers", "-p", vhost, "name", "durable")
    return {row.split("\t")[0]: row.split("\t")[1] for row in out.splitlines() if "\t" in row}


def openstack_config(tmp_path: Path, name: str = "etc/openstack.yaml", **extra_bindings: Any) -> dict[str, Any]:
    """A shipped OpenStack config as it is, its sinks in *tmp_path*/logs (as $LOGS_DIRECTORY would put them)."""
    text = (REPO / name).read_text()
    shipped = "${LOGS_DIRECTORY:-/var/log/bridged}/"
    assert shipped in text, f"{name}: its sinks no longer write under {shipped}"
    config = yaml.safe_load(text.replace(shipped, f"{tmp_path}/logs/"))
    config["reconnect"] = TEST_RECONNECT
    config["bindings"].update(extra_bindings)
    return config


class Cloud:
    """One oslo.messaging notification transport per service, each with its own control_exchange.

    *topic_mode*: every notifier also sends to bridged's topic (BRIDGED_TOPICS), as the services do
    with etc/openstack-topics.yaml. *compression*: [oslo_messaging_rabbit] kombu_compression.
    *retry*: the notifier's (None: retry until the broker is back, as the services' default).
    """

    def __init__(self, vhost: str, topic_mode: bool = False, compression: str | None = None,
                 retry: int | None = 10, services: tuple[str, ...] = tuple(SERVICES)) -> None:  # fmt: skip
        self.url = f"rabbit://guest:guest@{BROKER_HOST}/{quote(vhost, safe='')}"
        self.transports = {}
        for service in services:
            conf = cfg.ConfigOpts()
            conf([])
            oslo_messaging.set_transport_defaults(control_exchange=service)
            self.transports[service] = oslo_messaging.get_notification_transport(conf, url=self.url)
            if compression:
                conf.set_override("kombu_compression", compression, group="oslo_messaging_rabbit")
        oslo_messaging.set_transport_defaults(control_exchange="openstack")
        self.notifiers = {
            (service, topic, driver): oslo_messaging.Notifier(
                self.transports[service], publisher_id=f"{service}.ctl1", driver=driver,
                topics=[topic, BRIDGED_TOPICS[topic]] if topic_mode else [topic], retry=retry,
            )
            for service in services
            for topic in SERVICES[service]
            for driver in DRIVERS
        }  # fmt: skip
        self.sent: dict[str, str] = {}  # notification id -> the service whose file must hold it
        self._lock = threading.Lock()

    def notify_all(self, round_name: str) -> None:
        """Every service, topic, driver and priority, each with an id in its payload."""
        for (service, topic, driver), notifier in self.notifiers.items():
            for priority in PRIORITIES:
                ident = f"{round_name}:{service}:{topic}:{driver}:{priority}"
                context = {"request_id": f"req-{ident}", "user_id": "u1", "project_id": "p1"}
                getattr(notifier, priority)(context, f"{service}.test.{priority}", {"id": ident})
                self.sent[ident] = service

    def notify(self, service: str, ident: str, priority: str = "info", topic: str = "notifications",
               driver: str = "messagingv2", context: dict[str, Any] | None = None) -> None:  # fmt: skip
        """One notification with *ident* in its payload, counted as sent once the notifier returned."""
        notifier = self.notifiers[(service, topic, driver)]
        getattr(notifier, priority)(context or {"request_id": f"req-{ident}"}, f"{service}.test.{priority}",
                                    {"id": ident})  # fmt: skip
        with self._lock:
            self.sent[ident] = service

    def warm_up(self, service: str) -> None:
        """What a service does at start: its first notification declares its exchange."""
        notifier = self.notifiers[(service, SERVICES[service][0], "messagingv2")]
        notifier.info({}, f"{service}.service.start", {"id": f"warm-up:{service}"})

    def close(self) -> None:
        for transport in self.transports.values():
            transport.cleanup()


def captured(tmp_path: Path, service: str) -> set[str]:
    ids = set()
    for line in read_lines(tmp_path / "logs" / f"{service}.log"):
        payload = json.loads(line).get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("id"), str):
            ids.add(payload["id"])
    return ids


def missing(cloud: Cloud, tmp_path: Path, round_name: str) -> list[str]:
    got = {service: captured(tmp_path, service) for service in SERVICES}
    return [i for i, service in list(cloud.sent.items()) if i.startswith(round_name + ":") and i not in got[service]]


class SteadySender(threading.Thread):
    """A service notifying at *rate* a second (priorities in turn) until stopped; ids `<name>:<service>:<n>`."""

    def __init__(self, cloud: Cloud, service: str, rate: float, name: str) -> None:
        super().__init__(daemon=True)
        self.cloud, self.service, self.rate, self.name = cloud, service, rate, name
        self.count = 0
        self._halt = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self._halt.is_set():
            delay = started + self.count / self.rate - time.monotonic()
            if delay > 0:
                self._halt.wait(delay)
            self.cloud.notify(self.service, f"{self.name}:{self.service}:{self.count}",
                              PRIORITIES[self.count % len(PRIORITIES)])  # fmt: skip
            self.count += 1

    def stop(self) -> None:
        self._halt.set()


def start_services(cloud: Cloud, bridged: Bridged, consuming_before: int) -> None:
    """Start the services (their exchanges appear) and wait until every binding consumes again."""
    for service in SERVICES:
        cloud.warm_up(service)
    bridged.wait_event("consuming", count=consuming_before + len(SERVICES), timeout=30)


class Pong:
    target = oslo_messaging.Target(version="1.0")

    def ping(self, ctxt: dict[str, Any], value: int) -> int:
        return value + 1


def rpc_call_answers(url: str) -> bool:
    """An oslo RPC server and client on nova's exchange: the call must answer."""
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=url)
    target = oslo_messaging.Target(topic="compute", server="ctl1", exchange="nova")
    server = oslo_messaging.get_rpc_server(transport, target, [Pong()])
    server.start()
    try:
        client = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(topic="compute", exchange="nova"), timeout=30
        )
        return bool(client.prepare(server="ctl1").call({}, "ping", value=41) == 42)
    finally:
        server.stop()
        server.wait()
        transport.cleanup()
