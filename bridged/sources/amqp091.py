"""One binding: connect, declare, consume, ack after the sinks took it, back off.

Deliveries come through py-amqp's channel callback (no kombu Message per
delivery: that halves throughput). Lines are batched and written to every
sink; one ``basic_ack(multiple=True)`` then covers exactly what was written.
A sink failure holds the batch unacked on the same connection (heartbeats go
on, prefetch bounds it) and retries the sinks after a backoff; a connection
failure drops what is unwritten, which the broker requeues, and reconnects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import amqp
from amqp import exceptions as amqp_errors

from bridged.amqpio import FAST_PATH_ENV, frame_reader, tolerate_undecodable_properties
from bridged.backoff import Backoff
from bridged.broker import (
    CONNECTION_ERRORS,
    REFUSED_ERRORS,
    connect,
    declare_queue,
    describe_error,
    io_timeout,
    passwords_of,
    refusal_hint,
)
from bridged.config import BindingConfig, BrokerConfig, ReconnectConfig, Source
from bridged.filters import compile_filter
from bridged.formats import make_formatter, notification_meta, safe_line
from bridged.log import get_logger
from bridged.poison import RedeliveryCounter
from bridged.redact import Redactor
from bridged.secrets import mask_url
from bridged.sinks import LineMeta, Sink, SinkClosed, SinkError
from bridged.sources.base import BindingWorker
from bridged.stats import BindingStats, failure_reason

# While nothing is pending, wake once a second: heartbeats need a tick about
# that often (py-amqp has no heartbeat thread), and stop requests are seen.
IDLE_WAKEUP = 1.0
# A clean close waits this long for the broker's close-ok before dropping the socket.
CLOSE_TIMEOUT = 2.0
# While a binding's exchange does not exist yet, check again this often: the
# binding is in place within about this long of its service declaring it.
EXCHANGE_POLL = 0.5


class _Stopped(Exception):
    """Asked to stop while waiting for an exchange."""


class _SinkClosed(Exception):
    """An output that will never take a line again (stdout's reader went away)."""


EXIT_GAVE_UP = 3  # a binding reached reconnect.max_attempts
EXIT_OUTPUT_CLOSED = 4  # stdout was closed by its reader (`bridged ... | head`)


def _is_consumer_timeout(exc: BaseException) -> bool:
    """RabbitMQ's consumer_timeout closes the channel with a 406 that is no config refusal."""
    text = str(getattr(exc, "reply_text", "") or "")
    return isinstance(exc, amqp_errors.PreconditionFailed) and "acknowledgement" in text and "timed out" in text


tolerate_undecodable_properties()


class BindingConsumer:
    """Consumes one binding's queue on its own thread and connection."""

    def __init__(
        self,
        binding: BindingConfig,
        broker: BrokerConfig,
        reconnect: ReconnectConfig,
        sinks: Sequence[Sink],
        on_fatal: Callable[[BindingWorker, int], None] | None = None,
        backlog_interval: float | None = None,
    ) -> None:
        self.binding = binding
        self.broker = broker
        self.reconnect = reconnect
        self.sinks = tuple(sinks)
        self.stop_requested = threading.Event()
        self.consuming = threading.Event()
        self.attempted = threading.Event()  # the first connection attempt is over, either way
        # Monotonic time by which this thread must be back in its loop: each
        # blocking step (drain, connect, sink write, backoff wait) moves it.
        self.due_by = time.monotonic() + self._connect_budget()
        self._on_fatal = on_fatal
        self.ended = False  # stopped on purpose (gave up, output closed): not wedged
        self.name = binding.name
        self.queue = binding.queue
        self.sink_names = tuple(sink.name for sink in self.sinks)
        self.stats = BindingStats()
        self._backlog_interval = backlog_interval  # None: never read the queue's depth
        # py-amqp sends a heartbeat only when ticked: tick several times per interval, so a
        # short heartbeat survives a loaded machine (at most once a second: idle cost).
        self._tick = min(IDLE_WAKEUP, broker.heartbeat / 4) if broker.heartbeat else IDLE_WAKEUP
        redactor = Redactor(binding.redact) if binding.redact is not None else None
        # One formatter per distinct format among the sinks (a sink may have its own): the
        # first fills _lines, any other its own list, kept parallel to _lines.
        formats = list(dict.fromkeys(binding.sink_formats))
        self._format_name = formats[0]
        self._format = make_formatter(formats[0], binding.name, redactor)
        self._extra_formats = [(f, make_formatter(f, binding.name, redactor)) for f in formats[1:]]
        self._extra_lines: list[list[bytes]] = [[] for _ in self._extra_formats]
        self._sink_lines = [formats.index(f) for f in binding.sink_formats]  # per sink: which list it writes
        self._wanted = compile_filter(binding.keep, binding.drop)
        self._dropped = 0  # filtered out in the batch in hand: acked with it, never written
        # Only a syslog sink reads a notification's priority and event_type: others skip the parse.
        self._wants_meta = any(sink.wants_meta for sink in self.sinks)
        self._meta: list[LineMeta] = []
        self._log = get_logger(binding=binding.name, queue=binding.queue)
        self._passwords = passwords_of(broker)
        self._thread = threading.Thread(target=self.run, name=f"binding-{binding.name}", daemon=True)
        self._lines: list[bytes] = []
        self._written = [0] * len(self.sinks)  # per sink: how much of the held batch it took
        self._last_tag = 0
        self._max_redeliveries = binding.max_redeliveries
        self._redeliveries = RedeliveryCounter()
        self._flush_at = 0.0
        self._missing: list[Source] = []  # passive exchanges not declared yet by their service

    # -- lifecycle, called from the supervisor's thread ---------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_requested.set()

    def join(self, timeout: float | None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def is_consuming(self) -> bool:
        return self.consuming.is_set()

    def unacked(self) -> int:
        """Deliveries in hand (read from another thread: a snapshot)."""
        return len(self._lines)

    def is_wedged(self, now: float, grace: float) -> bool:
        """True when the thread died (not on purpose), or overran its current step by more than *grace* seconds."""
        if self.ended:
            return False
        return not self._thread.is_alive() or now > self.due_by + grace

    def _connect_budget(self) -> float:
        # connect, then a handful of declare round trips, each bounded by the I/O timeout
        return self.broker.connect_timeout + 4 * io_timeout(self.broker)

    # -- the binding's thread ----------------------------------------------

    def run(self) -> None:
        """Connect, consume and reconnect until stopped (or max_attempts is reached)."""
        connect_backoff = Backoff(self.reconnect)
        attempt = 0
        while not self.stop_requested.is_set():
            url = self.broker.urls[attempt % len(self.broker.urls)]
            attempt += 1
            self.due_by = time.monotonic() + self._connect_budget()
            try:
                self._session(url, connect_backoff)
                continue
            except _SinkClosed:
                self._end(EXIT_OUTPUT_CLOSED)
                return
            except REFUSED_ERRORS as exc:
                if _is_consumer_timeout(exc):
                    # A batch held unacked past the broker's consumer_timeout: not a config matter.
                    self.stats.reconnects["consumer_timeout"] += 1
                    delay = connect_backoff.next_delay()
                    self._log.warning("reconnect_scheduled", url=mask_url(url), reason=self._describe(exc),
                                      attempt=connect_backoff.attempts, retry_in=round(delay, 2))  # fmt: skip
                else:
                    # A config mismatch with the broker: say so loudly, retry slowly.
                    self.stats.reconnects["refused"] += 1
                    connect_backoff.next_delay()
                    delay = self.reconnect.max_delay
                    self._log.error("broker_refused", url=mask_url(url), reason=self._describe(exc),
                                    attempt=connect_backoff.attempts, retry_in=round(delay, 2))  # fmt: skip
            except CONNECTION_ERRORS as exc:
                self.stats.reconnects["connection"] += 1
                delay = connect_backoff.next_delay()
                self._log.warning("reconnect_scheduled", url=mask_url(url), reason=self._describe(exc),
                                  attempt=connect_backoff.attempts, retry_in=round(delay, 2))  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - a bug must not silently end the binding's thread
                self.stats.reconnects["error"] += 1
                delay = connect_backoff.next_delay()
                self._log.exception("binding_failed", reason=self._describe(exc), retry_in=round(delay, 2))
            finally:
                self.consuming.clear()
                self.attempted.set()
            failures = connect_backoff.attempts  # failures in a row: reset once consuming
            if self.reconnect.max_attempts is not None and failures >= self.reconnect.max_attempts:
                self._log.error("gave_up", attempts=failures)
                self._end(EXIT_GAVE_UP)
                return
            self.due_by = time.monotonic() + delay
            self.stop_requested.wait(delay)
        self._log.info("stopped")

    def _end(self, exit_code: int) -> None:
        """This binding stops for good and asks the supervisor to stop bridged with *exit_code*."""
        self.ended = True
        if self._on_fatal is not None:
            self._on_fatal(self, exit_code)

    def _describe(self, exc: BaseException) -> str:
        return describe_error(exc, self._passwords)

    def _session(self, url: str, connect_backoff: Backoff) -> None:
        """One connection's life: returns when asked to stop, raises on any failure."""
        conn = self._connect(url)
        clean = False
        try:
            channel = conn.channel()
            channel.auto_decode = False  # bodies stay bytes; formats decode safely
            channel = self._declare(conn, channel)
            channel.basic_qos(0, self.binding.prefetch, False)
            channel.basic_consume(self.binding.queue, callback=self._on_message)
            connect_backoff.reset()
            self.consuming.set()
            self._log.info("consuming", url=mask_url(url), prefetch=self.binding.prefetch)
            self._consume(conn, channel)
            clean = True
        except _Stopped:
            clean = True
        finally:
            self._reset_batch()  # unwritten deliveries are requeued by the broker on close
            self._close(conn, clean)

    def _connect(self, url: str) -> amqp.Connection:
        return connect(self.broker, url, self.binding.name)

    def _declare(self, conn: amqp.Connection, channel: amqp.Channel) -> amqp.Channel:
        """Check or declare the exchanges, declare the queue and bind it, on every connect.

        A restart may have wiped the queue or the bindings. Returns the channel
        to consume on: waiting for a missing exchange costs a channel per check.
        """
        b = self.binding
        if b.exchange_declare == "create":
            for source in b.sources:
                if not source.exchange.startswith("amq."):
                    self._create_exchange(channel, source)
            present, self._missing = list(b.sources), []
        else:
            channel, present, self._missing = self._await_exchanges(conn, channel)
        declared = declare_queue(channel, b)
        if declared.consumer_count and b.queue_arguments.get("x-single-active-consumer"):
            # Hot standby by design: the broker delivers to one consumer at a time.
            self._log.info("queue_standby", consumers=declared.consumer_count,
                           hint="single active consumer: this one takes over when the active one goes")  # fmt: skip
        elif declared.consumer_count:
            # Another instance with this binding, or another program: each gets a share of the messages.
            self._log.warning("queue_shared", consumers=declared.consumer_count,
                              hint="another consumer takes part of this queue's messages")  # fmt: skip
        for source in present:
            self._bind(channel, source)
        self._log.debug("declared", exchanges=[s.exchange for s in present],
                        waiting=[s.exchange for s in self._missing],
                        messages=declared.message_count, consumers=declared.consumer_count)  # fmt: skip
        return channel

    def _create_exchange(self, channel: amqp.Channel, source: Source) -> None:
        """exchange_declare: create, for an exchange bridged owns; a 406 names the keys to change."""
        b = self.binding
        with refusal_hint(
            f"exchange {source.exchange!r} exists with other settings: make {source.where}.exchange_type and "
            f"bindings.{b.name}.exchange_durable match it, or set bindings.{b.name}.exchange_declare: passive"
        ):
            channel.exchange_declare(source.exchange, source.exchange_type, durable=b.exchange_durable,
                                     auto_delete=False)  # fmt: skip

    def _bind(self, channel: amqp.Channel, source: Source) -> None:
        for key in source.routing_keys:
            channel.queue_bind(self.binding.queue, source.exchange, key)

    def _await_exchanges(
        self, conn: amqp.Connection, channel: amqp.Channel
    ) -> tuple[amqp.Channel, list[Source], list[Source]]:
        """Check the exchanges passively; while none exists, poll until a service declares one.

        bridged never creates another service's exchange: declaring it first
        with other arguments (OpenStack's are not durable) would break every
        later declaration by that service. Returns the channel and the sources
        present and missing; the consume loop keeps checking the missing ones.
        """
        logged: set[str] = set()
        while True:
            channel, present, missing = self._check_exchanges(conn, channel)
            for source in missing:
                if source.exchange not in logged:
                    logged.add(source.exchange)
                    self._log.warning(
                        "exchange_missing",
                        exchange=source.exchange,
                        hint=f"waiting for its service to declare it (bindings.{self.binding.name}.exchange_declare:"
                        " passive)",
                    )
            if present:
                for source in present:
                    if source.exchange in logged:
                        self._log.info("exchange_found", exchange=source.exchange)
                return channel, present, missing
            self.attempted.set()  # waiting for a service is not a failed start
            if self.stop_requested.wait(EXCHANGE_POLL):
                raise _Stopped()
            conn.heartbeat_tick()
            self.due_by = time.monotonic() + self._connect_budget()

    def _check_exchanges(
        self, conn: amqp.Connection, channel: amqp.Channel, sources: list[Source] | None = None
    ) -> tuple[amqp.Channel, list[Source], list[Source]]:
        """Passive declares; a 404 closes the channel, so a new one is opened after each."""
        present, missing = [], []
        for source in self.binding.sources if sources is None else sources:
            try:
                channel.exchange_declare(source.exchange, source.exchange_type, passive=True)
                present.append(source)
            except amqp_errors.NotFound:
                missing.append(source)
                channel = conn.channel()
                channel.auto_decode = False
        return channel, present, missing

    def _bind_appeared(self, conn: amqp.Connection) -> None:
        """While consuming: bind the exchanges that were missing and have appeared since (on a side channel)."""
        side = conn.channel()
        side, present, self._missing = self._check_exchanges(conn, side, self._missing)
        for source in present:
            self._bind(side, source)
            self._log.info("exchange_found", exchange=source.exchange)
        side.close()

    def _on_message(self, message: Any) -> None:
        """py-amqp delivery callback: format and queue the line; no I/O here."""
        info = message.delivery_info
        self.stats.received += 1
        if message.undecodable is not None:
            self._log.warning("properties_undecodable", reason=message.undecodable, delivery_tag=info["delivery_tag"])
            message.properties = {"bridged_error": f"undecodable AMQP properties: {message.undecodable}"}
        if info["redelivered"]:
            self.stats.redelivered += 1
            if self._max_redeliveries is not None and self._set_aside(message):
                return
        if not self._lines and not self._dropped:
            self._flush_at = time.monotonic() + self.binding.batch_delay
        self._last_tag = info["delivery_tag"]
        if self._wanted is not None and not self._wanted(message):
            self._dropped += 1
            return
        try:
            self._lines.append(self._format(message))
        except Exception as exc:  # noqa: BLE001 - one odd message must not stop the binding
            self._lines.append(self._failed_line(self._format_name, message, exc))
        if self._extra_formats:  # sinks with formats of their own: one line each, kept parallel
            for (fmt, formatter), lines in zip(self._extra_formats, self._extra_lines, strict=True):
                try:
                    lines.append(formatter(message))
                except Exception as exc:  # noqa: BLE001
                    lines.append(self._failed_line(fmt, message, exc))
        if self._wants_meta:
            self._meta.append(notification_meta(message, self.binding.name))

    def _failed_line(self, fmt: str, message: Any, exc: Exception) -> bytes:
        """The marked line written when a formatter failed on *message*."""
        self.stats.format_failures += 1
        self._log.warning("format_failed", reason=type(exc).__name__, format=fmt[:40])
        return safe_line(message, exc, fmt, self.binding.name)

    def _set_aside(self, message: Any) -> bool:
        """Reject (no requeue: to the dead-letter exchange) a message redelivered too often."""
        count = self._redeliveries.redeliveries(message)
        if self._max_redeliveries is None or count <= self._max_redeliveries:
            return False
        message.channel.basic_reject(message.delivery_info["delivery_tag"], requeue=False)
        self.stats.dead_lettered += 1
        self._redeliveries.forget(message)
        self._log.error(
            "message_dead_lettered",
            redeliveries=count,
            routing_key=message.delivery_info.get("routing_key"),
            message_id=message.properties.get("message_id"),
            size=len(message.body),
        )
        return True

    def _consume(self, conn: amqp.Connection, channel: amqp.Channel) -> None:
        """The hot loop: wait for a frame, let py-amqp dispatch it to _on_message, flush, heartbeat."""
        sink_backoff = Backoff(self.reconnect)  # a held batch lives on this connection only
        read_frames, fast = frame_reader(conn)
        if not fast:
            self._log.warning("amqp_fast_path_off", hint=f"reading through drain_events() (slower): {FAST_PATH_ENV}=0 "
                              "or py-amqp's internals changed")  # fmt: skip
        stop = self.stop_requested
        batch_size = self.binding.batch_size
        monotonic = time.monotonic
        now = monotonic()
        tick = self._tick
        next_heartbeat = now + tick
        retry_at = 0.0  # while a sink fails: when to try the held batch again
        backlog_interval = self._backlog_interval
        next_backlog = now if backlog_interval else float("inf")
        next_probe = now + EXCHANGE_POLL
        while not stop.is_set():
            timeout = self._wait_for_frames(now, retry_at, batch_size)
            try:
                read_frames(conn, min(timeout, tick))  # deliveries land in _on_message
            except TimeoutError:
                pass  # a frame stalled midway for SO_RCVTIMEO; its start is kept for the next read
            pending = len(self._lines) + self._dropped
            now = monotonic()
            self.due_by = now + tick
            if pending and (pending >= batch_size or now >= self._flush_at) and now >= retry_at:
                retry_at = self._try_flush(channel, now, sink_backoff)
            if now >= next_heartbeat:
                conn.heartbeat_tick()
                next_heartbeat = now + tick
            if now >= next_backlog:
                self._read_backlog(channel)
                next_backlog = now + backlog_interval  # type: ignore[operator]
            if self._missing and now >= next_probe:
                self._bind_appeared(conn)
                next_probe = now + EXCHANGE_POLL
        self._flush_before_close(channel)

    def _wait_for_frames(self, now: float, retry_at: float, batch_size: int) -> float:
        """How long the loop may wait for frames: a tick when idle, else until the batch is due (or retried)."""
        pending = len(self._lines) + self._dropped
        if not pending:
            return self._tick
        if pending >= batch_size:
            return retry_at - now
        return max(self._flush_at, retry_at) - now

    def _try_flush(self, settler: Any, now: float, sink_backoff: Backoff) -> float:
        """Write the held batch and settle it; returns when to try again after a sink failure (0.0: done).

        A failing sink holds the batch (the broker keeps it unsettled, prefetch bounds it) and it is
        retried on the same connection: no redelivery, no duplicates. *settler* acks (0-9-1) or accepts (1.0).
        """
        try:
            self._flush(settler)
        except SinkClosed as exc:
            self._log.error("output_closed", reason=str(exc), held=len(self._lines))
            raise _SinkClosed() from exc
        except SinkError as exc:
            delay = sink_backoff.next_delay()
            self._log.error("sink_failed", reason=str(exc), retry_in=round(delay, 2),
                            attempt=sink_backoff.attempts, held=len(self._lines))  # fmt: skip
            return now + delay
        if sink_backoff.attempts:
            self._log.info("sink_recovered", failures=sink_backoff.attempts)
        sink_backoff.reset()
        return 0.0

    def _flush_before_close(self, settler: Any) -> None:
        """Stopping: write and settle what is held; with a sink down it goes back to the queue on close."""
        if self._lines or self._dropped:
            try:
                self._flush(settler)
            except SinkError as exc:
                self._log.error("sink_failed", reason=str(exc), held=len(self._lines), requeued=True)

    def _read_backlog(self, channel: amqp.Channel) -> None:
        """The queue's depth and consumers, by a passive declare on this channel (deliveries keep flowing)."""
        declared = channel.queue_declare(self.binding.queue, passive=True)
        self.stats.queue_ready = declared.message_count
        self.stats.queue_consumers = declared.consumer_count

    def _flush(self, channel: amqp.Channel) -> None:
        """Write the batch to every sink, then ack it: written first, acked second.

        A sink that already took part of the held batch is not given it again.
        """
        all_lines = (self._lines, *self._extra_lines)
        meta = self._meta if self._wants_meta else None
        written = self._written
        stats = self.stats
        for index, sink in enumerate(self.sinks):
            lines = all_lines[self._sink_lines[index]]
            done = written[index]
            if done < len(lines):
                started = time.monotonic()
                try:
                    if done:
                        sink.write(lines[done:], meta[done:] if meta is not None else None)
                    else:
                        sink.write(lines, meta)
                except SinkError as exc:
                    written[index] = done + exc.taken  # lines it did take are not given again
                    stats.written[sink.name] += exc.taken
                    if exc.unconfirmed:
                        stats.unconfirmed[sink.name] += exc.unconfirmed
                    stats.sink_failures[(sink.name, failure_reason(exc))] += 1
                    raise
                stats.write_latency[sink.name].observe(time.monotonic() - started)
                stats.written[sink.name] += len(lines) - done
                written[index] = len(lines)
        channel.basic_ack(self._last_tag, multiple=True)
        stats.acked += len(self._lines)  # written and acked; filtered ones are acked too, counted apart
        stats.filtered += self._dropped
        stats.last_message_time = time.time()
        self._log.debug("batch_acked", lines=len(self._lines), dropped=self._dropped, delivery_tag=self._last_tag)
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._lines = []
        self._extra_lines = [[] for _ in self._extra_formats]
        self._dropped = 0
        self._meta = []
        self._written = [0] * len(self.sinks)

    def _close(self, conn: amqp.Connection, clean: bool) -> None:
        try:
            if clean and conn.transport is not None and conn.transport.sock is not None:
                conn.transport.sock.settimeout(CLOSE_TIMEOUT)
                conn.close()
            else:
                conn.collect()
        except CONNECTION_ERRORS:
            conn.collect()
