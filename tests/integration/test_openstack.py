"""OpenStack as it runs: real oslo.messaging notifiers and RPC against bridged with etc/openstack.yaml.

Each test gets a fresh vhost (a fresh broker as far as exchanges go) and
starts bridged first, as after a controller reboot.
"""

from __future__ import annotations

import json

import amqp

from tests.integration.conftest import BROKER_HOST, rabbitmqctl, read_lines, wait_until
from tests.integration.openstack import (
    DRIVERS,
    PRIORITIES,
    SERVICES,
    Cloud,
    exchanges,
    missing,
    openstack_config,
    rpc_call_answers,
    start_services,
)


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
