"""OpenStack as it runs: real oslo.messaging notifiers and RPC against bridged with etc/openstack.yaml.

Each test gets a fresh vhost (a fresh broker as far as exchanges go) and
starts bridged first, as after a controller reboot.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import amqp
import pytest
import yaml

from tests.integration.conftest import BROKER_HOST, Bridged, rabbitmqctl, read_lines, wait_until

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
DRIVERS = ("messagingv2", "messaging")  # oslo 2.0 envelope and the bare 1.0 message
# Fast reconnects for the broker-restart test: the shipped file keeps the production defaults.
TEST_RECONNECT = {"initial_delay": 0.2, "max_delay": 2.0, "multiplier": 2.0}


class OsloErrors(logging.Handler):
    """Collects what oslo.messaging logs at WARNING and above (a failed notify is only logged)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage()[:300])


@pytest.fixture
def oslo_errors() -> Iterator[OsloErrors]:
    handler = OsloErrors()
    logger = logging.getLogger("oslo_messaging")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def exchanges(vhost: str) -> dict[str, str]:
    """Exchange name -> durable ('true'/'false') in *vhost*, from the broker."""
    out = rabbitmqctl("list_exchanges", "-q", "--no-table-headers", "-p", vhost, "name", "durable")
    return {row.split("\t")[0]: row.split("\t")[1] for row in out.splitlines() if "\t" in row}


def openstack_config(tmp_path: Path, **extra_bindings: Any) -> dict[str, Any]:
    """etc/openstack.yaml as shipped, its sinks pointed at files under *tmp_path*."""
    text = (REPO / "etc/openstack.yaml").read_text().replace("/var/log/bridged/", f"{tmp_path}/logs/")
    config = yaml.safe_load(text)
    config["reconnect"] = TEST_RECONNECT
    config["bindings"].update(extra_bindings)
    return config


class Cloud:
    """One oslo.messaging notification transport per service, each with its own control_exchange."""

    def __init__(self, vhost: str) -> None:
        self.url = f"rabbit://guest:guest@{BROKER_HOST}/{quote(vhost, safe='')}"
        self.transports = {}
        for service in SERVICES:
            conf = cfg.ConfigOpts()
            conf([])
            oslo_messaging.set_transport_defaults(control_exchange=service)
            self.transports[service] = oslo_messaging.get_notification_transport(conf, url=self.url)
        oslo_messaging.set_transport_defaults(control_exchange="openstack")
        self.notifiers = {
            (service, topic, driver): oslo_messaging.Notifier(
                self.transports[service], publisher_id=f"{service}.ctl1", driver=driver, topics=[topic], retry=10
            )
            for service, topics in SERVICES.items()
            for topic in topics
            for driver in DRIVERS
        }
        self.sent: dict[str, str] = {}  # notification id -> the service whose file must hold it

    def notify_all(self, round_name: str) -> None:
        """Every service, topic, driver and priority, each with an id in its payload."""
        for (service, topic, driver), notifier in self.notifiers.items():
            for priority in PRIORITIES:
                ident = f"{round_name}:{service}:{topic}:{driver}:{priority}"
                context = {"request_id": f"req-{ident}", "user_id": "u1", "project_id": "p1"}
                getattr(notifier, priority)(context, f"{service}.test.{priority}", {"id": ident})
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
    return [i for i, service in cloud.sent.items() if i.startswith(round_name + ":") and i not in got[service]]


def start_services(cloud: Cloud, bridged: Bridged, consuming_before: int) -> None:
    """Start the services (their exchanges appear) and wait until every binding consumes again."""
    for service in SERVICES:
        cloud.warm_up(service)
    bridged.wait_event("consuming", count=consuming_before + len(SERVICES), timeout=30)


def test_openstack_capture_is_complete_and_harmless(vhost, tmp_path, start_bridged, oslo_errors):
    """bridged first on a fresh broker: it creates no exchange, oslo notifies and RPC work, nothing is missed."""
    bridged = start_bridged(
        openstack_config(tmp_path), env={"BRIDGED_BROKER_URL": f"amqp://guest:guest@{BROKER_HOST}/{vhost}"}
    )
    bridged.wait_event("exchange_missing", count=len(SERVICES))
    assert not set(SERVICES) & set(exchanges(vhost)), "bridged created a service's exchange"
    cloud = Cloud(vhost)
    try:
        start_services(cloud, bridged, consuming_before=0)
        cloud.notify_all("first")
        wait_until(lambda: not missing(cloud, tmp_path, "first"), 60, "every notification in its service's file")
        assert len(cloud.sent) == sum(len(t) for t in SERVICES.values()) * len(PRIORITIES) * len(DRIVERS)
        assert not oslo_errors.records, oslo_errors.records  # every notify call succeeded

        # nova's RPC on the same exchange still works, and was not logged.
        assert rpc_call_answers(cloud.url)
        assert all(durable == "false" for name, durable in exchanges(vhost).items() if name in SERVICES)
        assert not any("ping" in line for line in read_lines(tmp_path / "logs" / "nova.log"))

        # A broker restart wipes the non-durable exchanges; once the services send again, capture resumes.
        rabbitmqctl("stop_app")
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        consuming = bridged.count("consuming")
        start_services(cloud, bridged, consuming_before=consuming)
        cloud.notify_all("after-restart")
        wait_until(lambda: not missing(cloud, tmp_path, "after-restart"), 60, "every notification after the restart")
        assert bridged.count("broker_refused") == 0
    finally:
        cloud.close()


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


TOKEN = "gAAAAABl-live-keystone-token-0123456789"
CATALOG_URL = "http://nova-internal.example:8774/v2.1"
PASSWORDS = ("Adm1nPass-of-the-vm", "db-secret-in-payload")


def old_oslo_body(index: int) -> bytes:
    """A notification as oslo.messaging sent it before the 2023 backports: live token and catalog in the context."""
    inner = {
        "message_id": f"m-{index}",
        "publisher_id": "compute.ctl1",
        "event_type": "compute.instance.create.end",
        "priority": "INFO",
        "timestamp": "2026-11-22 05:16:18.000001",
        "payload": {"id": f"old:{index}", "admin_pass": PASSWORDS[0], "db": {"password": PASSWORDS[1]}},
        "_context_auth_token": TOKEN,
        "_context_service_catalog": [{"type": "compute", "endpoints": [{"internalURL": CATALOG_URL}]}],
        "_context_request_id": f"req-{index}",
    }
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def test_no_secret_from_an_older_publisher_reaches_any_sink(vhost, tmp_path, start_bridged):
    """Live tokens, the catalog and payload passwords are masked in oslo, json and template sinks; no line is lost."""
    extra = {
        "nova_json": {"exchange": "nova", "routing_keys": ["notifications.*"], "sink": "json", "format": "json"},
        "nova_text": {
            "exchange": "nova",
            "routing_keys": ["notifications.*"],
            "sink": "text",
            "format": "{priority} {event_type} {request_id} {payload} {body}",
        },
    }
    config = openstack_config(tmp_path, **extra)
    config["sinks"]["json"] = {"type": "file", "path": str(tmp_path / "logs" / "json.log")}
    config["sinks"]["text"] = {"type": "file", "path": str(tmp_path / "logs" / "text.log")}
    publisher = amqp.Connection(BROKER_HOST, userid="guest", password="guest", virtual_host=vhost, confirm_publish=True)
    publisher.connect()
    try:
        channel = publisher.channel()
        channel.exchange_declare("nova", "topic", durable=False, auto_delete=False)  # as nova does
        bridged = start_bridged(config, env={"BRIDGED_BROKER_URL": f"amqp://guest:guest@{BROKER_HOST}/{vhost}"})
        wait_until(lambda: bridged.count("consuming") >= 3, 30, "the three nova bindings consuming")
        count = 200
        for i in range(count):
            message = amqp.Message(old_oslo_body(i), content_type="application/json", delivery_mode=2)
            channel.basic_publish(message, exchange="nova", routing_key="notifications.info")
        logs = tmp_path / "logs"
        for name in ("nova.log", "json.log", "text.log"):
            wait_until(lambda n=name: len(read_lines(logs / n)) >= count, 30, f"{count} lines in {name}")
        for name in ("nova.log", "json.log", "text.log"):
            text = (logs / name).read_text()
            assert len(text.splitlines()) == count
            for secret in (TOKEN, CATALOG_URL, *PASSWORDS):
                assert secret not in text, f"{secret} in {name}"
            assert all(f"old:{i}" in text for i in range(count))
    finally:
        publisher.collect()
