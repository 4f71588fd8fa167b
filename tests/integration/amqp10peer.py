"""An AMQP 1.0 client independent of bridged's (qpid-proton's own reactor and handlers): send, receive, count."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import unquote, urlsplit

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container


def _connect(container: Any, url: str) -> Any:
    parts = urlsplit(url)
    return container.connect(f"amqp://{parts.hostname}:{parts.port}", user=unquote(parts.username or ""),
                             password=unquote(parts.password or ""), allowed_mechs="PLAIN",
                             allow_insecure_mechs=True, reconnect=False)  # fmt: skip


def send_all(url: str, address: str, messages: list[Message], timeout: float) -> Counter[str]:
    """Send *messages* unsettled (durable as given) and wait for each outcome: accepted, rejected, ..."""

    class Sender(MessagingHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.sent = 0
            self.outcomes: Counter[str] = Counter()

        def on_start(self, event: Any) -> None:
            self.connection = _connect(event.container, url)
            event.container.create_sender(self.connection, address)
            self.timer = event.container.schedule(timeout, self)

        def on_sendable(self, event: Any) -> None:
            while event.sender.credit and self.sent < len(messages):
                event.sender.send(messages[self.sent])
                self.sent += 1

        def _outcome(self, name: str) -> None:
            self.outcomes[name] += 1
            if sum(self.outcomes.values()) == len(messages):
                self.timer.cancel()
                self.connection.close()

        def on_accepted(self, event: Any) -> None:
            self._outcome("accepted")

        def on_rejected(self, event: Any) -> None:
            self._outcome("rejected")

        def on_released(self, event: Any) -> None:
            self._outcome("released")

        def on_timer_task(self, event: Any) -> None:
            self.connection.close()

    handler = Sender()
    Container(handler).run()
    return handler.outcomes


def receive(url: str, address: str, count: int, timeout: float) -> list[Message]:
    """Take up to *count* messages from *address* (accepting them) within *timeout*."""

    class Receiver(MessagingHandler):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(prefetch=min(count, 500))
            self.received: list[Message] = []

        def on_start(self, event: Any) -> None:
            self.connection = _connect(event.container, url)
            event.container.create_receiver(self.connection, address)
            self.timer = event.container.schedule(timeout, self)

        def on_message(self, event: Any) -> None:
            self.received.append(event.message)
            if len(self.received) >= count:
                self.timer.cancel()
                event.receiver.close()
                self.connection.close()

        def on_timer_task(self, event: Any) -> None:
            self.connection.close()

    handler = Receiver()
    Container(handler).run()
    return handler.received
