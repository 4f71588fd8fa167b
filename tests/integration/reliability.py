"""Helpers for fault tests: a confirming publisher that survives outages, and loss accounting."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import amqp

from tests.integration.conftest import BROKER_HOST, read_lines


class StreamPublisher(threading.Thread):
    """Publishes ids 0..count-1 with publisher confirms (at *rate* a second, else at once), retrying through outages.

    ``confirmed`` holds the ids the broker accepted: exactly the messages
    bridged must not lose. Each body is its id: ``<prefix>-<n>``, or what *name* makes of n.
    The one publisher of the fault, RELP and cluster tests (*host*: another node).
    """

    def __init__(self, exchange: str, routing_key: str, count: int, prefix: str = "m", rate: float | None = None,
                 host: str = BROKER_HOST, name: Callable[[int], str] | None = None,
                 body: Callable[[str], bytes] | None = None) -> None:  # fmt: skip
        """*body* makes a message's body from its id (default: the id itself)."""
        super().__init__(daemon=True)
        self.exchange, self.routing_key, self.count, self.prefix, self.rate = exchange, routing_key, count, prefix, rate
        self.host = host
        self.name_of = name or (lambda i: f"{self.prefix}-{i}")
        self.body_of = body or str.encode
        self.confirmed: list[str] = []
        self.reconnects = 0
        self.paused = threading.Event()
        self.returned: list[str] = []
        self._halt = threading.Event()

    def _connect(self) -> amqp.Channel:
        while not self._halt.is_set():
            try:
                conn = amqp.Connection(
                    self.host, userid="guest", password="guest", connect_timeout=2, confirm_publish=True
                )
                conn.connect()
                channel = conn.channel()
                channel.events["basic_return"].add(self._on_return)
                return channel
            except Exception:
                self.reconnects += 1
                time.sleep(0.2)
        raise RuntimeError("stopped")

    def _on_return(self, exc: object, exchange: str, routing_key: str, message: amqp.Message) -> None:
        """The broker confirms a message it routed to no queue: mandatory makes it say so first."""
        self.returned.append(message.body.decode() if isinstance(message.body, bytes) else message.body)

    def run(self) -> None:
        channel = self._connect()
        started = time.monotonic()
        i = 0
        while i < self.count and not self._halt.is_set():
            if self.paused.is_set():
                time.sleep(0.05)
                continue
            if self.rate:
                delay = started + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            message_id = self.name_of(i)
            try:
                returned_before = len(self.returned)
                channel.basic_publish(
                    amqp.Message(self.body_of(message_id), delivery_mode=2, message_id=message_id),
                    exchange=self.exchange, routing_key=self.routing_key, mandatory=True,
                )  # fmt: skip
            except Exception:
                channel = self._connect()  # unconfirmed: publish the same id again
                continue
            if len(self.returned) > returned_before:
                time.sleep(0.1)  # routed nowhere (a queue is restarting): not accepted, publish it again
                continue
            self.confirmed.append(message_id)
            i += 1
        try:
            channel.connection.close()
        except Exception:
            pass

    def stop(self) -> None:
        self._halt.set()


def account(confirmed: list[str], paths: list[Path]) -> dict[str, int]:
    """Lost (confirmed but in no file) and duplicates (lines beyond the first of each id)."""
    lines = [_message_id(line) for path in paths for line in read_lines(path)]
    counts = Counter(lines)
    lost = len(set(confirmed) - set(counts))
    return {"sent": len(confirmed), "written": len(lines), "lost": lost,
            "duplicates": sum(n - 1 for n in counts.values() if n > 1)}  # fmt: skip


def _message_id(line: str) -> str:
    """The published id: the line itself (raw), or the body of a json record."""
    if line.startswith("{"):
        return str(json.loads(line)["body"])
    return line


def wait_all_written(confirmed: list[str], paths: list[Path], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        figures = account(confirmed, paths)
        if figures["lost"] == 0 or time.monotonic() > deadline:
            return figures
        time.sleep(0.2)


def record(name: str, **figures: Any) -> None:
    """Append a test's figures to $BRIDGED_RELIABILITY_REPORT (JSON lines), for docs/reliability.md."""
    print(f"{name}: {figures}")
    path = os.environ.get("BRIDGED_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": name, **figures}) + "\n")
