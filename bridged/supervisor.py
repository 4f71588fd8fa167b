"""Builds sinks and one consumer per binding; owns signals; runs until stopped.

Signal handlers only record the signal and wake the main loop through a
pipe (gunicorn's pattern); all the work happens in the loop.
"""

from __future__ import annotations

import os
import select
import signal
import time
from types import FrameType

from bridged.config import Config
from bridged.consumer import BindingConsumer
from bridged.log import get_logger
from bridged.sinks import Sink, build_sinks

# SIGTERM to exit: consumers flush and ack what they hold, then close.
# systemd's TimeoutStopSec must stay above this.
STOP_DEADLINE = 10.0

EXIT_OK = 0
EXIT_GAVE_UP = 3  # a binding reached reconnect.max_attempts


class Supervisor:
    """Starts the bindings' consumers and stops them in order."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sinks: dict[str, Sink] = {}
        self.consumers: list[BindingConsumer] = []
        self._signals: list[int] = []
        self._stopping = False
        self._exit_code = EXIT_OK
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._log = get_logger()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or a binding gives up); returns the exit code."""
        self._install_signals()
        self.sinks = build_sinks(self.config.sinks)
        for binding in self.config.bindings.values():
            consumer = BindingConsumer(
                binding,
                self.config.broker,
                self.config.reconnect,
                [self.sinks[name] for name in binding.sinks],
                on_gave_up=self._consumer_gave_up,
            )
            self.consumers.append(consumer)
            consumer.start()
        self._log.info("started", bindings=len(self.consumers), sinks=len(self.sinks), config=self.config.path)
        while not self._stopping:
            self._wait_for_wakeup(timeout=1.0)
            self._dispatch_signals()
        return self._shutdown()

    def _install_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping and signum in (signal.SIGTERM, signal.SIGINT):
            # Second stop signal: leave now. Unacked messages go back to the queue.
            os._exit(128 + signum)
        self._signals.append(signum)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"!")
        except BlockingIOError:
            pass  # already awake

    def _wait_for_wakeup(self, timeout: float) -> None:
        readable, _, _ = select.select([self._wake_read], [], [], timeout)
        if readable:
            try:
                os.read(self._wake_read, 4096)
            except BlockingIOError:
                pass

    def _dispatch_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                self._log.info("reopening_sinks")
                for sink in self.sinks.values():
                    sink.reopen()
            else:
                self._log.info("stopping", signal=signal.Signals(signum).name)
                self._stopping = True

    def _consumer_gave_up(self, consumer: BindingConsumer) -> None:
        """Called from a consumer's thread: ask the main loop to stop with a failure code."""
        self._exit_code = EXIT_GAVE_UP
        self._stopping = True
        self._wake()

    def _shutdown(self) -> int:
        """Stop every consumer, wait for them under one deadline, close sinks."""
        self._stopping = True
        for consumer in self.consumers:
            consumer.stop()
        deadline = time.monotonic() + STOP_DEADLINE
        for consumer in self.consumers:
            while not consumer.join(timeout=0.2):
                self._dispatch_signals()
                if time.monotonic() > deadline:
                    break
        stuck = [c.binding.name for c in self.consumers if c.is_alive()]
        if stuck:
            self._log.warning("stop_deadline_passed", bindings=stuck)
        for sink in self.sinks.values():
            sink.close()
        self._log.info("stopped", exit_code=self._exit_code)
        return self._exit_code
