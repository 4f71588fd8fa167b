"""What the supervisor sees of a binding's worker, whatever protocol it speaks."""

from __future__ import annotations

import threading
from typing import Protocol

from bridged.config import BindingConfig
from bridged.stats import BindingStats


class BindingWorker(Protocol):
    """Consumes one binding on its own thread: connect, consume, write to the sinks, settle, back off."""

    binding: BindingConfig
    name: str
    queue: str
    sink_names: tuple[str, ...]
    stats: BindingStats
    consuming: threading.Event  # set while subscribed
    attempted: threading.Event  # the first connection attempt is over, either way
    ended: bool  # stopped on purpose (gave up, output closed): not wedged

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float | None) -> bool: ...
    def is_alive(self) -> bool: ...
    def is_consuming(self) -> bool: ...
    def unacked(self) -> int: ...
    def is_wedged(self, now: float, grace: float) -> bool: ...
