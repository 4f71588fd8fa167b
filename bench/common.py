"""Shared helpers for the benchmarks: fill a queue, run bridged, count lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import amqp
import yaml

HOST = os.environ.get("BRIDGED_BENCH_BROKER", "127.0.0.1:5672")
# The checkout these benchmarks belong to: its bridged is the one they run (unless told another).
CHECKOUT = Path(__file__).resolve().parent.parent
URL = f"amqp://guest:guest@{HOST}//"


def connect() -> amqp.Connection:
    conn = amqp.Connection(HOST, userid="guest", password="guest")
    conn.connect()
    return conn


# The request context oslo.messaging packs into a notification: modern publishers
# mask the token themselves, older ones (before the 2023 backports) sent it live.
MASKED_CONTEXT = {
    "_context_auth_token": "***", "_context_user_id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "_context_project_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "_context_roles": ["member", "reader"],
    "_context_request_id": "req-5d5e1e7a-3c0f-4f1a-9d7e-2b8f0c3a1e55", "_context_is_admin": False,
    "_context_service_catalog": None, "_context_read_only": False,
}  # fmt: skip
LIVE_CONTEXT = {
    **MASKED_CONTEXT,
    "_context_auth_token": "gAAAAABl" + "x" * 180,
    "_context_service_catalog": [{"type": "image", "endpoints": [{"url": "http://glance:9292"}]}],
}


def notification(i: int, oslo: bool = False, context: dict[str, Any] | None = None, event_types: int = 1) -> bytes:
    """A ~600-byte JSON body shaped like an OpenStack notification (plus *context*, when given)."""
    message = {
        "message_id": str(uuid.UUID(int=i)),
        "event_type": "compute.instance.update" if event_types == 1 else f"compute.instance.update.{i % event_types}",
        "publisher_id": "nova-compute:compute-01.example.org",
        "priority": "INFO",
        "timestamp": "2026-11-21 12:00:00.000000",
        "payload": {
            "instance_id": str(uuid.UUID(int=i + 1)), "state": "active", "old_state": "building",
            "tenant_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "user_id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
            "host": "compute-01", "flavor": "m1.small", "memory_mb": 2048, "vcpus": 1, "root_gb": 20,
            "image_ref_url": "http://glance.example.org:9292/images/5d5e1e7a-3c0f-4f1a-9d7e-2b8f0c3a1e55",
            "seq": i,
        },
    }  # fmt: skip
    message.update(context or {})
    if oslo:
        return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()
    return json.dumps(message).encode()


def fill_queue(
    queue: str, count: int, oslo: bool = False, context: dict[str, Any] | None = None, event_types: int = 1
) -> None:
    """Declare a durable queue and fill it with *count* persistent messages."""
    conn = connect()
    channel = conn.channel()
    channel.queue_delete(queue)
    channel.queue_declare(queue, durable=True, auto_delete=False)
    bodies = [notification(i, oslo, context, event_types) for i in range(256)]
    for i in range(count):
        channel.basic_publish(amqp.Message(bodies[i % 256], delivery_mode=2), exchange="", routing_key=queue)
    # Wait until the broker has them all (publishes are asynchronous).
    while channel.queue_declare(queue, passive=True).message_count < count:
        time.sleep(0.05)
    conn.close()


def queue_depth(queue: str) -> int:
    conn = connect()
    try:
        return int(conn.channel().queue_declare(queue, passive=True).message_count)
    finally:
        conn.close()


def delete_queue(queue: str) -> None:
    conn = connect()
    conn.channel().queue_delete(queue)
    conn.close()


class LineCounter:
    """Counts lines appended to the files matching a glob, reading only what is new."""

    def __init__(self, path: Path, pattern: str | None = None) -> None:
        self.path = path
        self.pattern = pattern  # a glob under path's directory, for a path template
        self.count = 0
        self._offsets: dict[Path, int] = {}

    def update(self) -> int:
        paths = sorted(self.path.parent.glob(self.pattern)) if self.pattern else [self.path]
        for path in paths:
            try:
                with open(path, "rb") as f:
                    f.seek(self._offsets.get(path, 0))
                    data = f.read()
            except FileNotFoundError:
                continue
            self._offsets[path] = self._offsets.get(path, 0) + len(data)
            self.count += data.count(b"\n")
        return self.count


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every bridged process, then wait for each (they flush and ack what they hold)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process *pid* so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_bridged(queue: str, count: int, fmt: str = "raw", extra: dict[str, Any] | None = None,
                timeout: float = 600, stats: dict[str, float] | None = None,
                top: dict[str, Any] | None = None, path_template: str | None = None,
                sink: dict[str, Any] | None = None, output: Path | None = None,
                env: dict[str, str] | None = None, amqp10: bool = False,
                source: Path | None = None) -> float:  # fmt: skip
    """Start a real `bridged --config` on a pre-filled queue; seconds from first line to *count* lines.

    *stats*, when given, gets ``cpu_us``: bridged's CPU time per message over the same span
    (steadier than msg/s on a shared machine). *sink* replaces the file sink, and the lines
    are then counted in *output* (where that sink's far end writes them). *amqp10* reads the
    queue over AMQP 1.0 (RabbitMQ's amqp1_0 plugin, address /amq/queue/<queue>). *source*: run the
    bridged of another checkout (its directory goes first on PYTHONPATH), to compare two trees in one run.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.log"
        path = str(Path(tmp) / path_template) if path_template else str(out)
        config = {
            "broker": {"url": URL, "heartbeat": 30},
            "sinks": {"f": sink or {"type": "file", "path": path}},
            "bindings": {"bench": {"exchange": "amq.direct", "exchange_type": "direct", "routing_keys": [queue],
                                   "queue": queue, "sink": "f", "format": fmt, **(extra or {})}},
            **(top or {}),
        }  # fmt: skip
        if amqp10:
            config["broker"] = {"url": URL.replace("amqp://", "amqp10://").removesuffix("//"), "heartbeat": 30}
            config["bindings"] = {"bench": {"address": f"/amq/queue/{queue}", "sink": "f", "format": fmt,
                                            **(extra or {})}}  # fmt: skip
        config_path = Path(tmp) / "bridged.yaml"
        config_path.write_text(yaml.safe_dump(config))
        child_env = {**os.environ, **(env or {})}
        tree = source or CHECKOUT
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(tree), child_env.get("PYTHONPATH"))))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridged", "--config", str(config_path), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if env else None,  # the fallback's warning is expected there
            env=child_env,
            cwd=tree,  # `-m` puts the working directory first on sys.path: it must be the tree under test
        )
        try:
            counter = LineCounter(output or out, "*.log" if path_template else None)
            deadline = time.monotonic() + timeout
            while counter.update() == 0:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("bridged wrote nothing")
                time.sleep(0.001)
            started = time.monotonic()
            cpu_started = cpu_seconds(proc.pid)
            while counter.update() < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bridged wrote {counter.count}/{count} lines")
                time.sleep(0.01)
            elapsed = time.monotonic() - started
            if stats is not None:
                stats["cpu_us"] = (cpu_seconds(proc.pid) - cpu_started) / (count - 1) * 1e6
            # every line written must also be acked: the queue ends empty
            while queue_depth(queue) and time.monotonic() < deadline:
                time.sleep(0.05)
            return elapsed * count / (count - 1)  # the first line started the clock
        finally:
            proc.terminate()
            proc.wait(30)


K = TypeVar("K")


def alternate(rounds: int, contenders: dict[K, Callable[[dict[str, float]], float]],
              label: Callable[[K], str] = str) -> tuple[dict[K, float], dict[K, float]]:  # fmt: skip
    """Run every contender once per round, in turn (a shared machine drifts: alternating spreads it).

    Each contender fills *stats* (``cpu_us``) and returns msg/s. Returns each
    one's best msg/s and lowest CPU µs per message over the rounds.
    """
    rate: dict[K, float] = {}
    cpu: dict[K, float] = {}
    for _ in range(rounds):
        for key, run in contenders.items():
            stats: dict[str, float] = {}
            msgs = run(stats)
            rate[key] = max(rate.get(key, 0.0), msgs)
            cpu[key] = min(cpu.get(key, float("inf")), stats["cpu_us"])
            print(f"  {label(key):40s} {msgs:9.0f} msg/s {stats['cpu_us']:6.1f} us/msg", flush=True)
    return rate, cpu
