"""The units under a real systemd (PID 1 in a container): docs/operations.md's install block run as written, then
bridged@glance beside bridged.service, reload, logrotate with and without the main unit, a config error that
stops the unit without a restart loop, and a stop under load that loses nothing (#23)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest

from bridged.publisher import oslo_notification
from tests.integration.conftest import BROKER_HOST, queue_counts, rabbitmqctl, wait_until
from tests.integration.containers import INSTALL_LIMIT, SystemdContainer, build_images, require_podman
from tests.integration.reliability import StreamPublisher, record
from tests.readme import OPERATIONS, blocks

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UNIT = (REPO / "systemd" / "bridged.service").read_text()
# The broker user the documented install names (amqp://bridged@rabbit.example), with a password no URL could hold.
USER, PASSWORD = "bridged", "p@ss:w/rd %41#?"
# Queues the shipped etc/openstack.yaml (bridged.service) and the documented glance instance declare.
QUEUES = ("bridged.nova", "bridged.glance", "bridged.neutron", "bridged.cinder", "bridged.keystone", "bridged.heat",
          "bridged.glance-audit")  # fmt: skip


def unit_seconds(key: str) -> float:
    return float(re.search(rf"^{key}=(\d+)", UNIT, re.M)[1])  # type: ignore[index]


# How long a (re)start may take: the unit's own stop timeout is the bound systemd itself uses.
START_LIMIT = unit_seconds("TimeoutStopSec") + 30
RESTART_SEC = unit_seconds("RestartSec")


def events(lines: list[str]) -> list[dict[str, object]]:
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def publish(exchange: str, routing_key: str, bodies: list[bytes], bound: tuple[str, ...] = ()) -> None:
    """Publish as an OpenStack service does: its exchange declared as oslo.messaging declares it (if missing).

    A service's first notifications reach only the queues bound by then: bridged binds once it sees the exchange
    (docs/configuration.md), so a new exchange is given until the *bound* queues are bound, as a running cloud is."""
    with amqp.Connection(BROKER_HOST, userid="guest", password="guest", confirm_publish=True) as conn:
        try:
            conn.channel().exchange_declare(exchange, "topic", passive=True)
        except amqp.exceptions.NotFound:
            conn.channel().exchange_declare(exchange, "topic", durable=False, auto_delete=False)
        wait_until(lambda: set(bound) <= _bound_queues(exchange), START_LIMIT, f"{bound} bound to {exchange}", 0.5)
        channel = conn.channel()
        for body in bodies:
            channel.basic_publish(amqp.Message(body, content_type="application/json"), exchange, routing_key,
                                  mandatory=True)  # fmt: skip


def notification(event_type: str, marker: str) -> bytes:
    return oslo_notification(event_type, {"marker": marker}, "INFO", "test.systemd")


def markers(text: str) -> set[str]:
    """The payload markers of the oslo records in *text*."""
    return set(re.findall(r'"marker":\s?"([\w-]+)"', text))


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SystemdContainer]:
    require_podman()
    build_images()
    rabbitmqctl("add_user", USER, PASSWORD)
    rabbitmqctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
    container = SystemdContainer(tmp_path, {"rabbit.example": "127.0.0.1"})
    try:
        yield container
    finally:
        container.remove()
        subprocess.run(["rabbitmqctl", "delete_user", USER], capture_output=True, timeout=120)
        with amqp.Connection(BROKER_HOST, userid="guest", password="guest") as conn:
            for queue in QUEUES:
                conn.channel().queue_delete(queue)
            for exchange in ("nova", "glance"):  # as the services declared them: gone, as on a fresh broker
                conn.channel().exchange_delete(exchange)


def test_the_documented_units_run_side_by_side_reload_rotate_refuse_bad_config_and_stop_cleanly(host, tmp_path):
    docs = blocks(OPERATIONS)
    # 1. The install block, as written; the password typed on stdin.
    done = host.sh(docs["systemd-install"], stdin=PASSWORD + "\n", timeout=INSTALL_LIMIT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Active: active (running)" in done.stdout
    started = events(host.journal("bridged"))
    assert any(e.get("event") == "ready" for e in started) and not any(e.get("level") == "error" for e in started)
    assert host.read("/proc/1/comm").strip() == "systemd"

    # 2. A notification from the broker lands in the unit's log directory, as the dynamic user.
    publish(
        "nova", "notifications.info", [notification("compute.instance.create.end", "first")], bound=("bridged.nova",)
    )
    wait_until(lambda: "first" in markers(host.read("/var/log/bridged/nova.log")), START_LIMIT, "nova.log")
    main_uid = owner_uid(host, "bridged")
    assert main_uid != "0" and host.sh("stat -c %u /var/log/bridged/nova.log").stdout.strip() == main_uid

    # 3. systemctl reload: SIGHUP through the shell (no /bin/kill in this image), the same process goes on.
    pid = host.show("bridged", "MainPID")["MainPID"]
    assert host.sh("command -v kill >/dev/null && ! test -e /bin/kill && ! test -e /usr/bin/kill").returncode == 0
    assert host.sh("systemctl reload bridged").returncode == 0
    wait_until(lambda: any(e.get("event") == "reloaded" for e in events(host.journal("bridged"))), START_LIMIT,
               "reloaded in the journal")  # fmt: skip
    assert host.show("bridged", "MainPID")["MainPID"] == pid

    # 4. The documented instance beside the main unit: its own user and directory.
    done = host.sh(docs["systemd-instance"], timeout=START_LIMIT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    publish(
        "glance",
        "notifications.info",
        [notification("image.upload", "both")],
        bound=("bridged.glance", "bridged.glance-audit"),
    )
    wait_until(lambda: "both" in markers(host.read("/var/log/bridged-glance/glance-audit.log")), START_LIMIT,
               "the instance's file")  # fmt: skip
    wait_until(lambda: "both" in markers(host.read("/var/log/bridged/glance.log")), START_LIMIT, "the main one's")
    instance_uid = owner_uid(host, "bridged@glance")
    assert instance_uid not in ("0", main_uid)
    assert host.sh("stat -c %u /var/log/bridged-glance/glance-audit.log").stdout.strip() == instance_uid
    assert host.show("bridged", "ActiveState")["ActiveState"] == "active"

    # 5. logrotate with both units, then on a host with the instance only: exit 0, and the instance reopens.
    rotate = "logrotate -f /etc/logrotate.d/bridged"
    assert host.sh(rotate).returncode == 0
    assert host.sh("systemctl stop bridged").returncode == 0
    done = host.sh(rotate)
    assert done.returncode == 0, done.stderr
    publish("glance", "notifications.info", [notification("image.upload", "after-rotation")])
    wait_until(lambda: "after-rotation" in markers(host.read("/var/log/bridged-glance/glance-audit.log")),
               START_LIMIT, "the line in the instance's new file")  # fmt: skip
    rotated = host.sh("ls /var/log/bridged-glance/").stdout.split()
    assert "glance-audit.log.1" in rotated, rotated

    # 6. A config error: one journal line, exit 2, and no restart loop.
    host.sh("cp /etc/bridged/bridged.yaml /root/good.yaml && "
            "sed -i 's/exchange_type: topic/exchange_type: fanotu/' /etc/bridged/bridged.yaml")  # fmt: skip
    assert host.sh("grep -q fanotu /etc/bridged/bridged.yaml").returncode == 0
    assert host.sh("systemctl start bridged").returncode != 0
    time.sleep(3 * RESTART_SEC)  # long enough for systemd to have restarted it twice, had it wanted to
    state = host.show("bridged", "ActiveState", "Result", "NRestarts", "ExecMainStatus")
    assert state == {"ActiveState": "failed", "Result": "exit-code", "NRestarts": "0", "ExecMainStatus": "2"}, state
    errors = [line for line in host.journal("bridged") if "config error" in line]
    assert len(errors) == 1 and "exchange_type" in errors[0], errors
    assert "exchange_type" in host.sh("systemctl status bridged --no-pager").stdout

    # 7. A stop under load: written + still queued = confirmed.
    host.sh("cp /root/good.yaml /etc/bridged/bridged.yaml && systemctl reset-failed bridged")
    assert host.sh("systemctl start bridged", timeout=START_LIMIT).returncode == 0
    publisher = StreamPublisher("nova", "notifications.info", 2000, prefix="load", rate=200,
                                body=lambda name: notification("compute.instance.update", name))  # fmt: skip
    publisher.start()
    wait_until(lambda: len(publisher.confirmed) >= 800, START_LIMIT, "800 confirmed")
    assert host.sh("systemctl stop bridged", timeout=START_LIMIT).returncode == 0
    publisher.join(START_LIMIT)
    assert host.show("bridged", "Result")["Result"] == "success"
    written = markers(host.sh("cat /var/log/bridged/nova.log*").stdout)
    queued = _queued_markers("bridged.nova")
    lost = set(publisher.confirmed) - written - queued
    assert lost == set(), sorted(lost)[:10]
    assert queue_counts("bridged.nova")[1] == 0  # nothing left unacknowledged
    record("systemd: stop under load (bridged.service in a container)", sent=len(publisher.confirmed),
           written=len(written & set(publisher.confirmed)), queued=len(queued), lost=len(lost))  # fmt: skip


def owner_uid(host: SystemdContainer, unit: str) -> str:
    """The uid *unit*'s main process runs as (its DynamicUser: the image has no nss-systemd to name it)."""
    pid = host.show(unit, "MainPID")["MainPID"]
    return re.search(r"^Uid:\s+(\d+)", host.read(f"/proc/{pid}/status"), re.M)[1]  # type: ignore[index]


def _bound_queues(exchange: str) -> set[str]:
    rows = rabbitmqctl("list_bindings", "-q", "--no-table-headers", "source_name", "destination_name")
    return {row.split("\t")[1] for row in rows.splitlines() if row.split("\t")[0] == exchange}


def _queued_markers(queue: str) -> set[str]:
    """The markers of the messages waiting in *queue* (read and requeued: nobody consumes it now)."""
    found: set[str] = set()
    with amqp.Connection(BROKER_HOST, userid="guest", password="guest") as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue)) is not None:
            found.update(re.findall(r"load-\d+", message.body.decode() if isinstance(message.body, bytes)
                                    else message.body))  # fmt: skip
    return found
