"""bridged publish, bridged tail and --check --connect against the real broker, with pika as the independent client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pika
import pytest
import yaml

from tests.integration.conftest import (
    BROKER_HOST,
    BROKER_URL,
    RUN_LIMIT,
    base_config,
    rabbitmqctl,
    tool,
    wait_lines,
    wait_until,
)  # fmt: skip

REPO = Path(__file__).resolve().parents[2]


def vhost_url(vhost: str, password: str = "guest") -> str:
    return f"amqp://guest:{password}@{BROKER_HOST}/{quote(vhost, safe='')}"


def pika_channel(vhost: str) -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    host, _, port = BROKER_HOST.partition(":")
    params = pika.ConnectionParameters(host, int(port or 5672), vhost, pika.PlainCredentials("guest", "guest"))
    conn = pika.BlockingConnection(params)
    return conn, conn.channel()


def tail_queues(vhost: str) -> dict[str, int]:
    """bridged tail's queues in *vhost* and their consumer counts."""
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "-p", vhost, "name", "consumers")
    rows = (line.split() for line in out.splitlines())
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[0].startswith("bridged.tail.")}


class Tail:
    """A started `bridged tail` with stdout and stderr in files."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.stdout_path, self.stderr_path = tmp_path / "tail.out", tmp_path / "tail.err"
        self._files = [open(self.stdout_path, "wb"), open(self.stderr_path, "wb")]
        self.proc = subprocess.Popen([sys.executable, "-m", "bridged", "tail", *args], stdin=subprocess.DEVNULL,
                                     stdout=self._files[0], stderr=self._files[1])  # fmt: skip

    def lines(self) -> list[str]:
        return self.stdout_path.read_text().splitlines()

    def wait(self) -> int:
        try:
            return self.proc.wait(RUN_LIMIT)
        finally:
            for f in self._files:
                f.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


@pytest.fixture
def tails():
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.kill()


def start_tail(tails: list[Tail], tmp_path: Path, vhost: str, *args: str) -> Tail:
    """Start tail and wait until its queue is consuming (what is published from then on reaches it)."""
    before = set(tail_queues(vhost))
    tail = Tail(tmp_path, *args)
    tails.append(tail)

    def consuming() -> bool:
        assert tail.proc.poll() is None, tail.stderr_path.read_text()
        return any(c == 1 for name, c in tail_queues(vhost).items() if name not in before)

    wait_until(consuming, RUN_LIMIT, "bridged tail consuming", interval=0.3)
    return tail


def test_publish_reaches_pika_with_body_headers_and_properties(vhost):
    """publish → pika sees every message with its body, headers and properties; confirms are reported."""
    conn, channel = pika_channel(vhost)
    channel.exchange_declare("ex", "topic")
    channel.queue_declare("q")
    channel.queue_bind("q", "ex", "a.#")
    result = tool("publish", "--url", vhost_url(vhost), "ex", "a.b", '{"n": 1}', "-H", "x-trace=abc", "-H",
                  "tenant=t 1", "--property", "content_type=application/json", "--property", "message_id=m-1",
                  "--property", "correlation_id=c-9", "--property", "priority=7", "--property", "timestamp=1700000000",
                  "--property", "app_id=test", "--persistent", "--count", "3")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3 sent, 3 confirmed"
    got = [channel.basic_get("q", auto_ack=True) for _ in range(4)]
    assert got[3] == (None, None, None)
    for _method, props, body in got[:3]:
        assert body == b'{"n": 1}'
        assert props.headers == {"x-trace": "abc", "tenant": "t 1"}
        assert (props.content_type, props.message_id, props.correlation_id) == ("application/json", "m-1", "c-9")
        assert (props.priority, props.timestamp, props.app_id, props.delivery_mode) == (7, 1700000000, "test", 2)
    # One message per stdin line, in order; without --persistent the delivery mode is transient.
    lines = [f"line {i}" for i in range(200)]
    result = tool("publish", "--url", vhost_url(vhost), "ex", "a.c", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0 and result.stdout.strip() == "200 sent, 200 confirmed", result.stderr
    got = [channel.basic_get("q", auto_ack=True) for _ in range(200)]
    assert [body.decode() for _, _, body in got] == lines
    assert {props.delivery_mode for _, props, _ in got} <= {None, 1}
    conn.close()


def test_publish_says_what_went_wrong_in_one_line(vhost):
    """Unroutable messages exit 1 and are counted; a missing exchange, a wrong password, a bad property exit 2."""
    conn, channel = pika_channel(vhost)
    channel.exchange_declare("ex", "topic")
    conn.close()
    url = vhost_url(vhost)
    unroutable = tool("publish", "--url", url, "ex", "nobody.listens", "x", "--count", "4")
    assert unroutable.returncode == 5  # EXIT_UNDELIVERED
    assert unroutable.stdout.strip() == ("4 sent, 4 confirmed, 4 unroutable (no queue is bound for this routing "
                                         "key: returned)")  # fmt: skip
    for args, expected in [
        (("--url", url, "missing", "k", "x"), "exchange 'missing' does not exist"),
        (("--url", vhost_url(vhost, "Wr0ngPass"), "ex", "k", "x"), "ACCESS_REFUSED"),
        (("--url", url, "ex", "k", "x", "--property", "priority=999"), "--property priority: expected a whole"),
        (("--url", url, "ex", "k", "x", "--property", "colour=red"), "unknown property 'colour'"),
        (("--url", url, "ex", "k", "x", "--priority", "info"), "--priority and --publisher-id go with --oslo"),
        (("--url", "http://x", "ex", "k", "x"), "must start with amqp://, amqps://"),
    ]:
        result = tool("publish", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Wr0ngPass" not in result.stderr + result.stdout


def test_publish_oslo_is_unwrapped_by_the_daemon(broker, uid, tmp_path, start_bridged):
    """publish --oslo builds an oslo.messaging 2.0 notification that the daemon's oslo format unwraps (and redacts)."""
    exchange, out = f"test.tools.{uid}", tmp_path / "oslo.log"
    broker.exchanges.add(exchange)
    broker.queues.add(f"bridged.test.{uid}")
    config = base_config({"f": {"type": "file", "path": str(out)}},
                         {"n": {"exchange": exchange, "routing_keys": ["notifications.*"],
                                "queue": f"bridged.test.{uid}", "sink": "f", "format": "oslo"}})  # fmt: skip
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    payload = {"instance_id": "i-1", "state": "active", "auth_token": "s3cr3t-token"}
    result = tool("publish", "--url", BROKER_URL, exchange, "notifications.error", json.dumps(payload),
                  "--oslo", "compute.instance.create.end", "--publisher-id", "compute.host1")  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "1 sent, 1 confirmed", result.stderr
    result = tool("publish", "--url", BROKER_URL, exchange, "notifications.info", "plain text",
                  "--oslo", "image.update", "--priority", "warn")  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in wait_lines(out, 2))
    assert (first["event_type"], first["priority"], first["publisher_id"]) == (
        "compute.instance.create.end", "ERROR", "compute.host1")  # fmt: skip
    assert first["payload"] == {**payload, "auth_token": "[redacted]"}
    assert first["oslo.version"] == "2.0" and len(first["message_id"]) == 36 and first["timestamp"]
    assert (second["event_type"], second["priority"], second["payload"]) == ("image.update", "WARN", "plain text")
    assert second["publisher_id"].startswith("bridged.")


def test_tail_prints_exactly_count_lines_and_leaves_no_queue(vhost, tmp_path, tails):
    """pika publishes 8 messages; tail --count 5 prints exactly the first 5, exits 0 and its queue is gone."""
    conn, channel = pika_channel(vhost)
    channel.exchange_declare("events", "topic")
    tail = start_tail(tails, tmp_path, vhost, "--url", vhost_url(vhost), "events", "app.*", "--count", "5",
                      "--format", "{routing_key} {amqp_message_id} {amqp_headers} {body}")  # fmt: skip
    for i in range(8):
        props = pika.BasicProperties(message_id=f"id-{i}", headers={"n": i})
        channel.basic_publish("events", f"app.k{i}", f"body {i}".encode(), props)
    channel.basic_publish("events", "other.k", b"not bound")
    assert tail.wait() == 0, tail.stderr_path.read_text()
    assert tail.lines() == [f'app.k{i} id-{i} {{"n":{i}}} body {i}' for i in range(5)]
    assert tail_queues(vhost) == {}
    assert tail.stderr_path.read_text() == ""
    conn.close()


def test_tail_survives_close_all_connections(vhost, tmp_path, tails):
    """tail reconnects (a new private queue) after rabbitmqctl close_all_connections and goes on printing."""
    conn, channel = pika_channel(vhost)
    channel.exchange_declare("events", "fanout")
    conn.close()
    url = vhost_url(vhost)
    tail = start_tail(tails, tmp_path, vhost, "--url", url, "events", "--format", "raw", "--log-level", "info")
    assert tool("publish", "--url", url, "events", "", "before", "--count", "3").returncode == 0
    wait_until(lambda: len(tail.lines()) >= 3, RUN_LIMIT, "3 lines before the close")
    rabbitmqctl("close_all_connections", "-p", vhost, "test: forced close")  # only the vhost's: / by default
    # Its private queue went with the connection; it is declared again when tail consumes again.
    wait_until(lambda: tail.stderr_path.read_text().count("] consuming ") == 2, RUN_LIMIT, "tail consuming again")
    assert tool("publish", "--url", url, "events", "", "after", "--count", "3").returncode == 0
    wait_until(lambda: len(tail.lines()) >= 6, RUN_LIMIT, "3 lines after the close")
    tail.proc.send_signal(signal.SIGINT)
    assert tail.wait() == 0
    assert tail.lines() == ["before"] * 3 + ["after"] * 3
    assert "reconnect_scheduled" in tail.stderr_path.read_text()
    assert tail_queues(vhost) == {}


def test_tail_timeout_binding_and_usage_errors(vhost, tmp_path, tails):
    """--timeout exits 0 when idle; --binding takes exchange, keys and format from the config; mistakes exit 2."""
    conn, channel = pika_channel(vhost)
    channel.exchange_declare("glance", "topic")
    conn.close()
    url = vhost_url(vhost)
    started = time.monotonic()
    idle = tool("tail", "--url", url, "glance", "--timeout", "2")
    assert idle.returncode == 0 and idle.stdout == "", idle.stderr
    assert time.monotonic() - started >= 2

    config = tmp_path / "bridged.yaml"
    config.write_text(yaml.safe_dump(base_config(
        {"f": {"type": "file", "path": str(tmp_path / "unused.log")}},
        {"images": {"exchange": "glance", "routing_keys": ["notifications.*"], "sink": "f",
                    "format": "{event_type} {payload}", "exchange_declare": "passive"}},
        broker={"url": url},
    )))  # fmt: skip
    tail = start_tail(tails, tmp_path, vhost, "--config", str(config), "--binding", "images", "--count", "1")
    assert tool("publish", "--url", url, "glance", "rpc.call", "{}").returncode == 5  # not bound: unroutable
    assert tool("publish", "--url", url, "glance", "notifications.info", '{"id": 7, "password": "p"}',
                "--oslo", "image.create").returncode == 0  # fmt: skip
    assert tail.wait() == 0, tail.stderr_path.read_text()
    assert tail.lines() == ['image.create {"id":7,"password":"[redacted]"}']

    for args, expected in [
        (("--url", url, "missing"), "exchange 'missing' does not exist"),
        (("--config", str(config), "--binding", "nova"), "--binding 'nova' is not a binding of"),
        (("--binding", "images"), "--binding NAME takes the binding from --config FILE"),
        (("--url", url, "glance", "--format", "{nope}"), "--format: unknown field {nope}"),
        (("--url", url, "glance", "--count", "0"), "must be at least 1"),
        (("--url", vhost_url(vhost, "Wr0ngPass"), "glance"), "ACCESS_REFUSED"),
        ((), "name the EXCHANGE to watch"),
        (("--url", "amqp10://guest:guest@127.0.0.1", "q"), "RabbitMQ does not browse address 'q'"),
    ]:
        result = tool("tail", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Wr0ngPass" not in result.stderr
    assert tail_queues(vhost) == {}


def _check_config(tmp_path: Path, vhost: str, **binding: object) -> Path:
    path = tmp_path / f"check-{len(list(tmp_path.glob('check-*')))}.yaml"
    sink_path = binding.pop("sink_path", str(tmp_path / "logs" / "out.log"))
    config = base_config({"f": {"type": "file", "path": sink_path}},
                         {"b": {"exchange": "ex", "queue": "q", "sink": "f", "exchange_declare": "passive",
                                **binding}},
                         broker={"url": vhost_url(vhost)})  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def test_check_connect_finds_what_fails_only_at_run_time(vhost, tmp_path):
    """--check --connect names a wrong password, a queue-argument mismatch, an unwritable sink (exit 2), and a
    missing exchange (a warning, exit 0: the daemon waits for its service, as on a cloud without heat)."""
    missing = tool("--config", str(_check_config(tmp_path, vhost)), "--check", "--connect")
    assert missing.returncode == 0, missing.stderr
    assert "warning: " in missing.stderr and "bindings.b.exchange: not deployed yet: exchange 'ex' does not exist" in (
        missing.stderr
    )
    assert len(missing.stderr.strip().splitlines()) == 1

    conn, channel = pika_channel(vhost)
    channel.exchange_declare("ex", "topic")
    channel.queue_declare("q", durable=True, arguments={"x-message-ttl": 1000})
    ok = tool("--config", str(_check_config(tmp_path, vhost, queue_arguments={"x-message-ttl": 1000})),
              "--check", "--connect")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "connected: 1 broker URL, 1 binding and 1 sink checked" in ok.stdout
    assert not (tmp_path / "logs").exists()  # probed, not created

    mismatch = tool("--config", str(_check_config(tmp_path, vhost, queue_arguments={"x-message-ttl": 2000})),
                    "--check", "--connect")  # fmt: skip
    assert mismatch.returncode == 2
    assert "bindings.b.queue: queue 'q' exists with other settings: make bindings.b.durable" in mismatch.stderr
    assert "x-message-ttl" in mismatch.stderr and len(mismatch.stderr.strip().splitlines()) == 1
    # Nothing changed: the queue kept its arguments.
    assert "1000" in rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "arguments")
    conn.close()

    password = _check_config(tmp_path, vhost, queue_arguments={"x-message-ttl": 1000})
    password.write_text(password.read_text().replace(vhost_url(vhost), vhost_url(vhost, "Wr0ngPass")))
    refused = tool("--config", str(password), "--check", "--connect")
    assert refused.returncode == 2 and "broker.url: " in refused.stderr and "refused the login" in refused.stderr
    assert "Wr0ngPass" not in refused.stderr + refused.stdout

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = tool("--config", str(_check_config(tmp_path, vhost, queue_arguments={"x-message-ttl": 1000},
                                                    sink_path=str(blocker / "sub" / "out.log"))),
                      "--check", "--connect")  # fmt: skip
    assert unwritable.returncode == 2
    assert f"sinks.f: cannot create {blocker}/sub/out.log: {blocker} is not a directory" in unwritable.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv and root")
def test_check_connect_probes_sinks_as_the_user_who_runs_it(vhost):
    """Run as the service user (uid 65534), a root-owned log directory is reported as not writable."""
    conn, channel = pika_channel(vhost)
    channel.exchange_declare("ex", "topic")
    conn.close()
    root = Path(tempfile.mkdtemp(prefix="bridged-check-"))  # pytest's tmp_path sits in root's 0700 directory
    try:
        root.chmod(0o755)
        logs = root / "logs"
        logs.mkdir(mode=0o755)  # root's, as /var/log/bridged would be without LogsDirectory=
        config = _check_config(root, vhost, sink_path=str(logs / "out.log"))
        config.chmod(0o644)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                   sys.executable, "-m", "bridged", "--config", str(config), "--check", "--connect"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_LIMIT, cwd=REPO)
        assert result.returncode == 2, result.stderr
        assert f"sinks.f: cannot create {logs}/out.log: {logs}: Permission denied" in result.stderr
        as_root = tool("--config", str(config), "--check", "--connect")
        assert as_root.returncode == 0, as_root.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_check_connect_passes_on_the_shipped_example(vhost, tmp_path):
    """etc/bridged.yaml passes once its services' exchanges exist (its URL pointed at this test's vhost)."""
    conn, channel = pika_channel(vhost)
    for exchange in ("glance", "nova"):
        channel.exchange_declare(exchange, "topic")  # as the services declare them
    conn.close()
    shipped = (REPO / "etc" / "bridged.yaml").read_text()
    assert "url: amqp://guest:guest@127.0.0.1:5672//" in shipped
    config = tmp_path / "bridged.yaml"
    config.write_text(shipped.replace("amqp://guest:guest@127.0.0.1:5672//", vhost_url(vhost)))
    result = tool("--config", str(config), "--check", "--connect")
    assert result.returncode == 0, result.stderr
    assert "OK (3 bindings, 2 sinks" in result.stdout and "connected" in result.stdout


def test_tail_killed_with_sigkill_leaves_no_queue(vhost, tmp_path, tails):
    """kill -9 of tail: the broker deletes its exclusive queue with the connection."""
    conn, channel = pika_channel(vhost)
    channel.exchange_declare("events", "topic")
    conn.close()
    tail = start_tail(tails, tmp_path, vhost, "--url", vhost_url(vhost), "events")
    assert len(tail_queues(vhost)) == 1
    tail.proc.kill()
    tail.wait()
    wait_until(lambda: tail_queues(vhost) == {}, RUN_LIMIT, "the tail queue gone", interval=0.3)
