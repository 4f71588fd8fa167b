"""The Dockerfile, unchanged, built and run with podman as docs/operations.md's docker lines say (#23).

`docker` is podman here: a shell function hands `docker build` the options
that make pip trust the host's CA bundle and `docker run` the host's network
(the broker is the host's 127.0.0.1:5672, named `rabbitmq` as in the docs);
the documented lines themselves run as written.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest

from bridged.publisher import oslo_notification
from tests.integration.conftest import BROKER_HOST, queue_counts, rabbitmqctl, wait_until
from tests.integration.containers import (
    INSTALL_LIMIT,
    build_images,
    checkout_copy,
    pip_config,
    podman,
    podman_env,
    require_podman,
)
from tests.integration.reliability import StreamPublisher, record
from tests.readme import OPERATIONS, blocks

pytestmark = pytest.mark.slow

USER, PASSWORD = "bridged", "s3cret:@/%25 with spaces"
# The image's HEALTHCHECK start period and interval are 30 s; a start (Python, connect, declare) takes seconds.
START_LIMIT = 60
STOP_LIMIT = 30  # docker stop's 10 s grace, and the container's teardown
DEFAULT_QUEUE = "bridged.notifications"  # etc/docker.yaml's binding, `notifications`


def docker_shell(directory: Path) -> str:
    """bash that defines `docker` as podman, with this machine's build and network options."""
    build = " ".join(["--format", "docker", *pip_config(directory)])
    return (f"docker() {{ case \"$1\" in build) shift; podman build {build} \"$@\";; "
            "run) shift; podman run --network host --add-host rabbitmq:127.0.0.1 \"$@\";; "
            "*) podman \"$@\";; esac; }\n")  # fmt: skip


def markers(text: str) -> set[str]:
    return set(re.findall(r'"marker":\s?"([\w-]+)"', text))


def notification(marker: str) -> bytes:
    return oslo_notification("compute.instance.update", {"marker": marker}, "INFO", "test.docker")


def healthy(container: str) -> bool:
    """`podman healthcheck run`: the image's HEALTHCHECK, run now (no systemd on the host schedules it)."""
    return podman("healthcheck", "run", container, check=False, timeout=60).returncode == 0


def logs(container: str) -> str:
    """bridged's own log: the container's stderr (`docker logs` shows it on its stderr)."""
    return podman("logs", container, check=False).stderr


def output(container: str) -> str:
    """The stdout sink's lines: the container's stdout."""
    return podman("logs", container, check=False).stdout


def declare_nova() -> None:
    with amqp.Connection(BROKER_HOST, userid="guest", password="guest") as conn:
        conn.channel().exchange_declare("nova", "topic", durable=False, auto_delete=False)  # as nova does


def publish(bodies: list[bytes]) -> None:
    with amqp.Connection(BROKER_HOST, userid="guest", password="guest", confirm_publish=True) as conn:
        channel = conn.channel()
        for body in bodies:
            channel.basic_publish(amqp.Message(body), "nova", "notifications.info", mandatory=True)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    require_podman()
    build_images()
    rabbitmqctl("add_user", USER, PASSWORD)
    rabbitmqctl("set_permissions", "-p", "/", USER, ".*", ".*", ".*")
    with amqp.Connection(BROKER_HOST, userid="guest", password="guest") as conn:
        conn.channel().exchange_delete("nova")  # a broker where nova has not run yet
    checkout = checkout_copy(tmp_path)
    try:
        yield checkout
    finally:
        for name in ("bridged", "bridged-own"):
            podman("rm", "-f", "-t", "5", name, check=False, timeout=120)
        podman("volume", "rm", "-f", "bridged-logs", check=False)
        subprocess.run(["rabbitmqctl", "delete_user", USER], capture_output=True, timeout=120)
        with amqp.Connection(BROKER_HOST, userid="guest", password="guest") as conn:
            for queue in (DEFAULT_QUEUE, "bridged.own"):
                conn.channel().queue_delete(queue)
            conn.channel().exchange_delete("nova")


def run_block(workdir: Path, name: str, timeout: float) -> subprocess.CompletedProcess[str]:
    script = docker_shell(workdir.parent) + blocks(OPERATIONS)[name]
    env = {**podman_env(), "BRIDGED_BROKER_PASSWORD": PASSWORD}
    return subprocess.run(["bash", "-e", "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_the_image_runs_as_documented_healthy_once_consuming_and_stops_without_loss(workdir):
    # 1. docs/operations.md's build and run lines, as written; the password from the environment.
    done = run_block(workdir, "docker-run", INSTALL_LIMIT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    image = json.loads(podman("image", "inspect", "localhost/bridged").stdout)[0]
    assert image["Healthcheck"]["Test"][0] == "CMD"  # --format docker kept the HEALTHCHECK

    # 2. Waiting for nova's exchange: running, but not healthy.
    wait_until(lambda: "exchange_missing" in logs("bridged"), START_LIMIT, "exchange_missing")
    assert not healthy("bridged")
    # 3. nova declares it: bound, consuming, healthy.
    declare_nova()
    wait_until(lambda: '"consuming"' in logs("bridged"), START_LIMIT, "consuming")
    wait_until(lambda: healthy("bridged"), START_LIMIT, "healthy once consuming")
    # 4. PID 1 is bridged itself, as uid 10001.
    status = podman("exec", "bridged", "cat", "/proc/1/status").stdout
    assert re.search(r"^Uid:\s+10001\s", status, re.M), status
    assert "bridged" in podman("exec", "bridged", "cat", "/proc/1/cmdline").stdout
    # 5. Messages on stdout (docker logs), as JSON lines.
    publish([notification(f"hello-{i}") for i in range(3)])
    wait_until(lambda: {"hello-0", "hello-1", "hello-2"} <= markers(output("bridged")), START_LIMIT, "3 on stdout")

    # 6. docker stop in the middle of a stream: written + still queued = confirmed.
    publisher = StreamPublisher("nova", "notifications.info", 2000, prefix="load", rate=200,
                                body=lambda name: notification(name))  # fmt: skip
    publisher.start()
    wait_until(lambda: len(publisher.confirmed) >= 800, START_LIMIT, "800 confirmed")
    podman("stop", "bridged", timeout=STOP_LIMIT)
    publisher.join(START_LIMIT)
    assert podman("inspect", "-f", "{{.State.ExitCode}}", "bridged").stdout.strip() == "0"
    written = {m for m in markers(output("bridged")) if m.startswith("load-")}
    queued = _queued(DEFAULT_QUEUE)
    lost = set(publisher.confirmed) - written - queued
    assert lost == set(), sorted(lost)[:10]
    assert queue_counts(DEFAULT_QUEUE)[1] == 0
    record("docker stop under load (the image under podman)", sent=len(publisher.confirmed),
           written=len(written), queued=len(queued), lost=len(lost))  # fmt: skip
    podman("rm", "-f", "bridged")

    # 7. The documented mount of one's own config, the password from the environment.
    (workdir / "bridged.yaml").write_text(
        "broker:\n  url: amqp://bridged@rabbitmq:5672//\n  password: ${BRIDGED_BROKER_PASSWORD}\n"
        "sinks:\n  own: {type: file, path: /var/log/bridged/own.log, format: oslo}\n"
        "bindings:\n  own: {exchange: nova, routing_keys: ['notifications.*'], queue: bridged.own, sink: own}\n"
        "metrics: {listen: ':9125'}\n"
    )
    done = run_block(workdir, "docker-mount", START_LIMIT)
    assert done.returncode == 0, done.stderr[-3000:]
    wait_until(lambda: '"consuming"' in logs("bridged-own"), START_LIMIT, "consuming with the mounted config")
    publish([notification("own-1")])
    own_log = lambda: podman("exec", "bridged-own", "cat", "/var/log/bridged/own.log", check=False).stdout  # noqa: E731
    wait_until(lambda: "own-1" in markers(own_log()), START_LIMIT, "own.log in the volume")
    wait_until(lambda: healthy("bridged-own"), START_LIMIT, "healthy")
    assert PASSWORD not in podman("logs", "bridged-own").stdout + logs("bridged-own")


def _queued(queue: str) -> set[str]:
    """Markers of the messages waiting in *queue* (read, then requeued when the connection closes)."""
    found: set[str] = set()
    with amqp.Connection(BROKER_HOST, userid="guest", password="guest") as conn:
        channel = conn.channel()
        while (message := channel.basic_get(queue)) is not None:
            body = message.body.decode() if isinstance(message.body, bytes) else message.body
            found.update(re.findall(r"load-\d+", body))
    return found
