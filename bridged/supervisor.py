"""Builds sinks and one consumer per binding; owns signals; start, reload, stop.

Signal handlers only record the signal and wake the main loop through a
pipe (gunicorn's pattern); all the work happens in the loop: SIGTERM/SIGINT
stop, SIGHUP reopens files and reloads the config. The loop also tells
systemd how things stand (READY, STATUS, WATCHDOG).
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import TYPE_CHECKING

from bridged.config import BindingConfig, Config, ConfigError, MetricsConfig, load_config
from bridged.config import warnings as config_warnings
from bridged.exitcodes import EXIT_OK
from bridged.limits import fit_open_files
from bridged.log import get_logger
from bridged.log import reopen as reopen_log
from bridged.sinks import Sink, build_sink
from bridged.sources import BindingWorker, build_worker
from bridged.stats import BindingStats

if TYPE_CHECKING:
    from bridged.httpserver import HttpServer
from bridged.systemd import Notifier

# SIGTERM to exit: consumers flush and ack what they hold, then close.
# systemd's TimeoutStopSec (30 s in our unit) must stay above this.
STOP_DEADLINE = 10.0
# A binding that overran its current step (a sink write, a connect) by this
# much is wedged: the watchdog stops so systemd restarts us. WatchdogSec
# raises it; it never goes below this floor.
WEDGED_GRACE_FLOOR = 10.0
# The first `stats` line comes this soon (or at stats_interval, if shorter):
# someone watching a fresh start sees messages flow without waiting a minute.
FIRST_STATS_AFTER = 10.0


class StartError(Exception):
    """Something the start cannot get past (an address in use): one line for the operator."""


class Supervisor:
    """Owns the consumers, the sinks and the process's signals."""

    def __init__(
        self,
        config: Config,
        notifier: Notifier | None = None,
        health_file: str | None = None,
        sinks: Mapping[str, Sink] | None = None,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """*sinks* replace the ones the config declares, and *until* (checked about once a second)
        ends the run with exit 0: a tool such as `bridged tail` runs on the daemon's machinery.
        Either one means the config is not a file to reload on SIGHUP."""
        self.config = config
        self.health_file = health_file
        self.sinks: dict[str, Sink] = {}
        self._given_sinks = sinks
        self._until = until
        self._reloadable = sinks is None and until is None
        self.consumers: dict[str, BindingWorker] = {}
        self.notifier = notifier or Notifier()
        self._signals: list[int] = []
        self._stopping = False
        self._stop_asked = False  # a stop signal arrived (it may wait behind a reload in progress)
        self._ready_sent = False
        self._last_status = ""
        self._exit_code = EXIT_OK
        self._health_failing = False
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._metrics_server: HttpServer | None = None
        self._prepared = False
        self._last_stats: dict[str, dict[str, int]] = {}
        self._next_stats = time.monotonic() + min(FIRST_STATS_AFTER, config.metrics.stats_interval)
        interval = self.notifier.watchdog_interval
        self._wedged_grace = max(WEDGED_GRACE_FLOOR, 2 * interval) if interval else WEDGED_GRACE_FLOOR
        self._log = get_logger()
        self._install_signals()  # from here on a SIGTERM is a graceful stop, even before run()

    def prepare(self) -> None:
        """What can still fail at start, done before READY (or --daemon's return): bind the metrics address.

        Raises StartError with one line naming the key.
        """
        if self._prepared:
            return
        self._fit_open_files(self.config)
        try:
            self._start_metrics(self.config.metrics)
        except OSError as exc:
            listen = self.config.metrics.listen
            address = f"{listen[0]}:{listen[1]}" if listen else "?"
            raise StartError(f"metrics.listen {address}: {exc.strerror or exc}") from None
        self._prepared = True

    def _fit_open_files(self, config: Config) -> None:
        """The open-file limit raised to what *config* can hold; a warning when the hard limit is too low."""
        warning = fit_open_files(config)
        if warning:
            self._log.warning("config_warning", warning=warning)

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or a binding gives up); returns the exit code."""
        self.prepare()
        for warning in config_warnings(self.config):
            self._log.warning("config_warning", warning=warning)
        if self._given_sinks is not None:
            self.sinks = dict(self._given_sinks)
        else:
            self.sinks = {name: build_sink(cfg) for name, cfg in self.config.sinks.items()}
        for binding in self.config.bindings.values():
            self._start_consumer(binding)
        self._log.info("started", bindings=len(self.consumers), sinks=len(self.sinks), config=self.config.path)
        tick = min(1.0, self.notifier.watchdog_interval or 1.0)
        while not self._stopping:
            self._wait_for_wakeup(timeout=tick)
            self._dispatch_signals()
            self._report()
            self._log_stats()
            if self._until is not None and self._until():
                self._stopping = True
        return self._shutdown()

    # -- metrics and the stats line --------------------------------------------

    def _start_metrics(self, metrics: MetricsConfig) -> None:
        if metrics.listen is None:
            return
        from bridged.metrics import start_metrics  # prometheus_client only when the endpoint is configured

        host, port = metrics.listen
        self._metrics_server = start_metrics(host, port, lambda: list(self.consumers.values()), self)
        self._log.info("metrics_listening", address=f"{host}:{self._metrics_server.port}")

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None

    def wedged(self) -> list[str]:
        """Bindings whose thread died or overran its step (for /healthz; read from the HTTP thread)."""
        now = time.monotonic()
        return [c.binding.name for c in list(self.consumers.values()) if c.is_wedged(now, self._wedged_grace)]

    def not_consuming(self) -> list[str]:
        """Bindings not consuming right now (for /readyz)."""
        return [c.binding.name for c in list(self.consumers.values()) if not c.consuming.is_set()]

    def _log_stats(self) -> None:
        """Every stats_interval: one `stats` line with each binding's counts since the last one."""
        interval = self.config.metrics.stats_interval
        now = time.monotonic()
        if not interval or now < self._next_stats:
            return
        self._next_stats = now + interval
        bindings = {}
        for name, consumer in list(self.consumers.items()):
            current = consumer.stats.snapshot()
            before = self._last_stats.get(name, {})
            counts: dict[str, int | None] = {key: value - before.get(key, 0) for key, value in current.items()}
            counts["backlog"] = consumer.stats.queue_ready
            counts["unacked"] = consumer.unacked()
            bindings[name] = counts
            self._last_stats[name] = current
        self._log.info("stats", interval=interval, bindings=bindings)

    # -- signals -------------------------------------------------------------

    def _install_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self._stopping or self._stop_asked:
                # Second stop signal (also while a reload still holds the first): leave now.
                # Unacked messages go back to the queue.
                os._exit(128 + signum)
            self._stop_asked = True
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

    def _dispatch_signals(self, stop_only: bool = False) -> None:
        """Act on the signals received; *stop_only*: only TERM/INT (inside a reload: a HUP waits for it to end)."""
        for signum in list(self._signals):
            if signum == signal.SIGHUP:
                if stop_only:
                    continue
                self._signals.remove(signum)
                if not self._stopping:
                    self.reload()
            else:
                self._signals.remove(signum)
                self._log.info("stopping", signal=signal.Signals(signum).name)
                self._stopping = True

    # -- health and systemd ----------------------------------------------------

    def _report(self) -> None:
        """READY once every binding consumes or has tried once; STATUS on change; WATCHDOG while healthy."""
        consumers = list(self.consumers.values())
        consuming = sum(1 for c in consumers if c.consuming.is_set())
        status = f"{consuming}/{len(consumers)} bindings consuming"
        if not self._ready_sent and all(c.consuming.is_set() or c.attempted.is_set() for c in consumers):
            self._ready_sent = True
            self.notifier.ready(status)
            self._last_status = status
            self._log.info("ready", status=status)
        elif status != self._last_status and self._ready_sent:
            self._last_status = status
            self.notifier.status(status)
        wedged = self.wedged()
        if wedged:
            self._log.error("bindings_wedged", bindings=wedged)
            return
        if self.notifier.watchdog_interval:
            self.notifier.watchdog()
        if self.health_file:
            self._touch_health_file(self.health_file)

    def _touch_health_file(self, path: str) -> None:
        """Touch *path*; a failure is logged once (and its recovery once), not every second."""
        try:
            try:
                os.utime(path)
            except FileNotFoundError:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            if not self._health_failing:
                self._log.warning("health_file_failed", path=path, reason=exc.strerror)
            self._health_failing = True
            return
        if self._health_failing:
            self._log.info("health_file_recovered", path=path)
        self._health_failing = False

    # -- consumers and reload --------------------------------------------------

    def _start_consumer(self, binding: BindingConfig, stats: BindingStats | None = None) -> None:
        metrics = self.config.metrics
        watched = metrics.listen is not None or metrics.stats_interval > 0
        consumer = build_worker(
            binding,
            self.config.broker,
            self.config.reconnect,
            [self.sinks[name] for name in binding.sinks],
            on_fatal=self._consumer_failed,
            backlog_interval=metrics.backlog_interval if watched else None,
        )
        if stats is not None:
            consumer.stats = stats  # a restarted binding keeps counting: counters never go back
        self.consumers[binding.name] = consumer
        consumer.start()

    def _consumer_failed(self, consumer: BindingWorker, exit_code: int) -> None:
        """Called from a consumer's thread (gave up, or its output closed): stop with *exit_code*."""
        self.request_stop(exit_code)

    def request_stop(self, exit_code: int = EXIT_OK) -> None:
        """Stop soon with *exit_code*; safe from any thread (a tool's sink that has its count)."""
        self._exit_code = exit_code
        self._stopping = True
        self._wake()

    def reload(self) -> None:
        """SIGHUP: reopen files; re-read the config and restart only the bindings it changes."""
        reopen_log()
        for sink in self.sinks.values():
            sink.reopen()
        if not self._reloadable:
            return
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            self._log.error("reload_failed", config=self.config.path, reason=str(exc))
            return
        self.notifier.reloading()
        self._fit_open_files(new)
        old = self.config
        changed_sinks = {name for name in old.sinks if old.sinks[name] != new.sinks.get(name)}
        connection_changed = (old.broker, old.reconnect) != (new.broker, new.reconnect)
        to_stop = [
            name
            for name, consumer in self.consumers.items()
            if new.bindings.get(name) != consumer.binding
            or connection_changed
            or changed_sinks.intersection(consumer.binding.sinks)
        ]
        stopped = [self.consumers.pop(name) for name in to_stop]
        self._stop_consumers(stopped)
        if self._stopping:  # a SIGTERM came during the reload: stop rather than start anything new
            self._log.info("reload_interrupted", restarted_not=sorted(set(to_stop) & set(new.bindings)))
            return
        kept_stats = {c.binding.name: c.stats for c in stopped}
        for name in changed_sinks:
            self.sinks.pop(name).close()
        for name, cfg in new.sinks.items():
            if name not in self.sinks:
                self.sinks[name] = build_sink(cfg)
        self.config = new
        started = [b for name, b in new.bindings.items() if name not in self.consumers]
        for binding in started:
            self._start_consumer(binding, kept_stats.get(binding.name))
        if new.metrics.listen != old.metrics.listen:
            self._stop_metrics()
            try:
                self._start_metrics(new.metrics)
            except OSError as exc:
                self._log.error("metrics_failed", address=new.metrics.listen, reason=exc.strerror)
        self._log.info(
            "reloaded",
            restarted=sorted(set(to_stop) & set(new.bindings)),
            started=sorted({b.name for b in started} - set(to_stop)),
            stopped=sorted(set(to_stop) - set(new.bindings)),
        )
        self.notifier.ready(self._last_status or "reloaded")

    def _stop_consumers(self, consumers: Iterable[BindingWorker]) -> list[str]:
        """Stop *consumers* and wait for them under one deadline; returns the ones still running."""
        consumers = list(consumers)
        for consumer in consumers:
            consumer.stop()
        deadline = time.monotonic() + STOP_DEADLINE
        for consumer in consumers:
            while not consumer.join(timeout=0.2):
                self._dispatch_signals(stop_only=True)  # a SIGTERM during a reload's restart is seen at once
                if time.monotonic() > deadline:
                    break
        return [c.binding.name for c in consumers if c.is_alive()]

    def _shutdown(self) -> int:
        """Stop every consumer, wait for them under one deadline, close sinks."""
        self._stopping = True
        self.notifier.stopping()
        stuck = self._stop_consumers(self.consumers.values())
        if stuck:
            self._log.warning("stop_deadline_passed", bindings=stuck)
        for sink in self.sinks.values():
            sink.close()
        self._stop_metrics()
        self._log.info("stopped", exit_code=self._exit_code)
        self.notifier.close()
        return self._exit_code
