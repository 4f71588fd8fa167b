"""The seam between the protocol-blind worker and a protocol: a Source opens Sessions and judges failures.

A protocol module (amqp091.py, amqp10.py) implements both for one binding;
the worker (worker.py) drives them and never imports a protocol module or
its library. Deliveries reach the worker as bridged's own Delivery records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bridged.delivery import Delivery

# A session's delivery callback: False once the worker's batch is full (a session that reads many
# deliveries at once stops there and returns from pump(), so the worker can flush).
Deliver = Callable[[Delivery], bool]

# How the worker treats a failure (Source.classify); None means a bug: logged with its traceback.
REFUSED = "refused"  # the broker refused what the config asks for: retrying at once will not help
CONSUMER_TIMEOUT = "consumer_timeout"  # a batch was held unsettled past the broker's consumer timeout
CONNECTION = "connection"  # lost or unreachable: back off and connect again


@dataclass(frozen=True)
class Finding:
    """One line of `--check --connect`: an error (the daemon would fail at it) or a warning (it would wait)."""

    text: str
    warning: bool = False


class Stopped(Exception):
    """The worker was asked to stop while a session was being opened."""


class Session(Protocol):
    """One connection of one binding, from connect to close; used by the binding's thread only."""

    # True once deliveries can come (False while waiting for an exchange or queue to appear).
    consuming: bool
    # Extra fields for the `consuming` log line (the AMQP 1.0 address, ...).
    log_fields: dict[str, Any]

    def pump(self, timeout: float) -> None:
        """Wait up to *timeout* s for the broker, hand every delivery that came to the worker, and do the
        session's own periodic work (heartbeats, waiting for what is missing). Raises when the connection is
        lost or the broker refuses."""

    def settle(self, tag: int) -> None:
        """Accept every delivery up to *tag*: every sink took them."""

    def reject(self, tag: int) -> None:
        """Refuse one delivery for good: the broker dead-letters (or drops) it, never delivers it again."""

    def backlog(self) -> tuple[int, int] | None:
        """The queue's (ready messages, consumers), or None where the protocol cannot tell."""

    def keepalive(self) -> None:
        """Send what keeps the connection alive (a heartbeat). Called from the worker's keepalive thread
        while the binding's thread writes to its sinks and does not touch the session."""

    def close(self, clean: bool) -> None:
        """Close (clean: politely, waiting briefly for the broker); unsettled deliveries go back to the queue."""


class Source(Protocol):
    """One protocol's way to the broker for one binding."""

    def connect_budget(self) -> float:
        """Seconds that opening a session may take (connect, declarations) before the binding looks wedged."""

    def open(self, url: str, deliver: Deliver, stop: threading.Event) -> Session:
        """Connect to *url* and subscribe (or start waiting for what is missing); raises on failure,
        Stopped if *stop* is set meanwhile."""

    def endpoint(self, url: str) -> tuple[str, int]:
        """The host and TCP port *url* connects to (watched while the broker refuses connections)."""

    def classify(self, exc: BaseException) -> str | None:
        """REFUSED, CONSUMER_TIMEOUT or CONNECTION for a failure of this protocol; None for anything else."""

    def describe(self, exc: BaseException) -> str:
        """One line for the log, with no password in it."""
