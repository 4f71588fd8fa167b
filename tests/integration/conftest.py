"""Fixtures that drive a real broker and real bridged processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import yaml

BROKER_HOST = os.environ.get("BRIDGED_TEST_BROKER", "127.0.0.1:5672")
BROKER_URL = f"amqp://guest:guest@{BROKER_HOST}//"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll *predicate* until it returns something truthy, or fail naming *what*."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# An upper bound for one tool run that should take about a second (a loaded 2-core machine).
RUN_LIMIT = 60


def tool(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`bridged ARGS` run to its end (with *env* added to the environment): exit code, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "bridged", *args], input=stdin, capture_output=True, text=True,
                          timeout=RUN_LIMIT, env={**os.environ, **(env or {})})  # fmt: skip


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        return []


def wait_lines(path: Path, count: int, timeout: float = 30.0) -> list[str]:
    """Wait until *path* holds at least *count* lines and return them."""
    wait_until(lambda: len(read_lines(path)) >= count, timeout, f"{count} lines in {path}")
    return read_lines(path)


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=timeout).stdout


# A whole RabbitMQ node starts within this on a loaded 2-core machine (its boot takes 5-20 s).
NODE_START_LIMIT = 180.0


def restart_broker_node() -> None:
    """Stop the whole RabbitMQ node (not only its app) and start it again, as a host reboot or an upgrade does."""
    rabbitmqctl("stop")
    start_broker_node()


def start_broker_node() -> None:
    """Start the RabbitMQ node detached and wait until it serves; a no-op wait when it already runs."""
    subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60)
    deadline = time.monotonic() + NODE_START_LIMIT
    while True:  # until the node answers at all, await_startup fails at once (exit 69)
        done = subprocess.run(["rabbitmqctl", "-q", "await_startup", "--timeout", "30"], capture_output=True,
                              timeout=60)  # fmt: skip
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"RabbitMQ did not start within {NODE_START_LIMIT:g} s: {done.stderr[-500:]!r}")
        time.sleep(1)


def queue_counts(queue: str) -> tuple[int, int]:
    """(ready, unacknowledged) for *queue*, from the broker itself."""
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged")
    for row in out.splitlines():
        fields = row.split()
        if len(fields) == 3 and fields[0] == queue:
            return int(fields[1]), int(fields[2])
    raise AssertionError(f"queue {queue} not found")


class Broker:
    """A publishing connection with publisher confirms, plus cleanup of what tests declared."""

    def __init__(self) -> None:
        # confirm_publish makes basic_publish wait for the broker's ack (a bare
        # confirm_select only turns confirms on and returns at once).
        self.conn = amqp.Connection(BROKER_HOST, userid="guest", password="guest", confirm_publish=True)
        self.conn.connect()
        self.channel = self.conn.channel()
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()

    def reconnect(self) -> None:
        try:
            self.conn.collect()
        except Exception:
            pass
        # confirm_publish makes basic_publish wait for the broker's ack (a bare
        # confirm_select only turns confirms on and returns at once).
        self.conn = amqp.Connection(BROKER_HOST, userid="guest", password="guest", confirm_publish=True)
        self.conn.connect()
        self.channel = self.conn.channel()

    def declare_exchange(self, name: str, kind: str, durable: bool = True) -> None:
        self.exchanges.add(name)
        self.channel.exchange_declare(name, kind, durable=durable, auto_delete=False)

    def publish(self, exchange: str, routing_key: str, body: bytes | str, **properties: Any) -> None:
        properties.setdefault("delivery_mode", 2)
        self.channel.basic_publish(amqp.Message(body, **properties), exchange=exchange, routing_key=routing_key)

    def get_all(self, queue: str) -> list[bytes]:
        """Drain *queue* with basic_get (acking), returning the bodies."""
        bodies = []
        while True:
            message = self.channel.basic_get(queue, no_ack=True)
            if message is None:
                return bodies
            bodies.append(message.body)

    def cleanup(self) -> None:
        try:
            self.reconnect()
            for queue in self.queues:
                self.channel.queue_delete(queue)
            for exchange in self.exchanges:
                self.channel.exchange_delete(exchange)
            self.conn.close()
        except Exception:
            pass


@pytest.fixture(scope="session", autouse=True)
def broker_is_up() -> None:
    """Fail fast, with a clear message, when no broker listens."""
    conn = amqp.Connection(BROKER_HOST, userid="guest", password="guest", connect_timeout=5)
    try:
        conn.connect()
    except OSError as exc:
        pytest.exit(f"no RabbitMQ at {BROKER_HOST}: {exc} (start it: rabbitmq-server -detached)", returncode=3)
    conn.close()


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker()
    yield b
    b.cleanup()


@pytest.fixture
def vhost(uid: str) -> Iterator[str]:
    """A fresh vhost: a broker of its own as far as exchanges and queues go (guest may use it)."""
    name = f"bridged-test-{uid}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=120)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)  # fmt: skip


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for DNS:localhost and a client certificate (CN=bridged) signed by it, another CA."""
    directory = tmp_path_factory.mktemp("tls")
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=bridged",
             "-keyout", "client.key", "-out", "client.csr", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", "client.pem", cwd=directory)  # fmt: skip
    return directory


class Bridged:
    """A started `python -m bridged` process with its config, stdout and stderr in files."""

    def __init__(
        self,
        directory: Path,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        self.config_path = directory / f"bridged-{uuid.uuid4().hex[:6]}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.stdout_path = self.config_path.with_suffix(".stdout")
        self.stderr_path = self.config_path.with_suffix(".stderr")
        self._stdout = open(self.stdout_path, "wb")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridged", "--config", str(self.config_path), "--log-level", "debug", *(args or [])],
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            # Through a pipe when the child gets a file size limit: its own log must not hit it.
            stderr=subprocess.PIPE if preexec_fn else self._stderr,
            env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,
        )
        if preexec_fn:
            threading.Thread(target=self._copy_stderr, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        """bridged's own log so far (JSON lines on stderr)."""
        events = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "non_json", "line": line})
        return events

    def count(self, event: str, **fields: Any) -> int:
        return sum(
            1 for e in self.events() if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        )

    def wait_event(self, event: str, count: int = 1, timeout: float = 30.0, **fields: Any) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and self.count(event, **fields) < count:
                raise AssertionError(f"bridged exited {self.proc.returncode}: {self.stderr_path.read_text()[-3000:]}")
            return self.count(event, **fields) >= count

        wait_until(seen, timeout, f"{count}x {event} {fields}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close_files()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close_files()

    def _copy_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self._stderr.write(line)
                self._stderr.flush()
            except ValueError:  # closed by the test's cleanup
                return

    def close_files(self) -> None:
        self._stdout.close()
        self._stderr.close()


@pytest.fixture
def start_bridged(tmp_path: Path) -> Iterator[Callable[..., Bridged]]:
    started: list[Bridged] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None, **options: Any) -> Bridged:
        bridged = Bridged(tmp_path, config, env, **options)
        started.append(bridged)
        return bridged

    yield start
    for bridged in started:
        bridged.kill()


def base_config(sinks: dict[str, Any], bindings: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A config with fast reconnects, suitable for tests.

    The tests own their exchanges, so bindings create them unless a test says
    otherwise (the product's default, passive, has tests of its own).
    """
    for binding in bindings.values():
        binding.setdefault("exchange_declare", "create")
    config: dict[str, Any] = {
        "broker": {"url": BROKER_URL, "heartbeat": 10},
        "reconnect": {"initial_delay": 0.2, "max_delay": 2.0, "multiplier": 2.0},
        "sinks": sinks,
        "bindings": bindings,
    }
    config.update(top)
    return config


# The reconnect pace of the AMQP 1.0 tests' configs: their waits derive from it.
AMQP10_RECONNECT = {"initial_delay": 0.2, "max_delay": 2.0, "multiplier": 2.0}


def amqp10_config(url: str, address: str, out: Path, **binding: Any) -> dict[str, Any]:
    """One binding reading an AMQP 1.0 *address* into the file *out*."""
    return {
        "broker": {"url": url, "heartbeat": 10},
        "reconnect": AMQP10_RECONNECT,
        "sinks": {"f": {"type": "file", "path": str(out)}},
        "bindings": {"b": {"address": address, "sink": "f", **binding}},
    }


def pipe_full(fd: int) -> bool:
    """Whether the pipe read through *fd* holds close to its 64 KiB (FIONREAD): its writer is blocked."""
    import fcntl
    import struct
    import termios

    pending = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return pending > 60_000


def fanout_binding(broker: Broker, uid: str, **extra: Any) -> tuple[str, str, dict[str, Any]]:
    """A fanout exchange and a queue of the test's own (deleted after it), and a binding of them with *extra*."""
    exchange, queue = f"test.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    return exchange, queue, {"exchange": exchange, "exchange_type": "fanout", "queue": queue, **extra}


def start_on_fanout(broker: Broker, start_bridged: Callable[..., Bridged], uid: str, path: Path,
                    **binding: Any) -> tuple[Bridged, str, str]:  # fmt: skip
    """bridged with one binding on a fresh fanout exchange, writing to the file *path*; (bridged, exchange, queue)
    once it consumes."""
    exchange, queue, entry = fanout_binding(broker, uid, sink="f", **binding)
    bridged = start_bridged(base_config({"f": {"type": "file", "path": str(path)}}, {"b": entry}))
    bridged.wait_event("consuming")
    return bridged, exchange, queue


class LibraryErrors(logging.Handler):
    """Collects what a library logs at WARNING and above (a failed oslo notify is only logged)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage()[:300])


@pytest.fixture
def oslo_errors() -> Iterator[LibraryErrors]:
    """What oslo.messaging logged at WARNING and above during the test."""
    handler = LibraryErrors()
    logger = logging.getLogger("oslo_messaging")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
