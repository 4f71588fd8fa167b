"""One binding's worker: deliveries -> format -> every sink -> settle, whatever the protocol.

The promise lives here: a batch is settled (acked, accepted) only after
every sink of the binding took all of it. Deliveries come from a Session
(session.py); lines are batched and written to every sink, then one settle
covers exactly what was written. A sink failure holds the batch unsettled
on the same connection (the broker keeps it, prefetch bounds it) and
retries the sinks after a backoff: no redelivery, no duplicates.

A lost connection with a batch in hand: the batch is still written (not
settled). If its queue survived, the broker redelivers it (a duplicate, at
most one batch); if not (a non-durable queue on a broker restart, as
OpenStack's are), the lines would otherwise be gone. The worker then
connects again at once if the session had been up (a broker that closed
on us, or restarted), else after a capped exponential backoff; while the
broker's port refuses connections, the wait ends as soon as it accepts.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence

from bridged.backoff import Backoff
from bridged.compression import Uninflatable, compressed, inflate
from bridged.config import BindingConfig, BrokerConfig, ReconnectConfig
from bridged.delivery import Delivery
from bridged.exitcodes import EXIT_GAVE_UP, EXIT_OK, EXIT_OUTPUT_CLOSED
from bridged.filters import compile_filter
from bridged.formats import LineMeta, make_formatter, marked_line, notification_meta, safe_line
from bridged.log import get_logger
from bridged.poison import RedeliveryCounter
from bridged.redact import Redactor
from bridged.secrets import mask_url
from bridged.sinks import Sink, SinkClosed, SinkDone, SinkError
from bridged.sources.session import CONNECTION, CONSUMER_TIMEOUT, REFUSED, Session, Source, Stopped
from bridged.stats import BindingStats, failure_reason

# While nothing is pending, wake once a second: heartbeats need a tick about
# that often (py-amqp has no heartbeat thread), and stop requests are seen.
IDLE_WAKEUP = 1.0

# A session that lived this long was no connection failing at once: when it is lost, connect again at once.
STABLE_SESSION = 1.0
# While the broker's port refuses connections (restarting, app stopped), look this often whether it
# accepts again: a refused TCP connect costs the broker nothing (and RabbitMQ logs nothing for one
# closed before the AMQP handshake).
PORT_WATCH = 0.25


class _OutputClosed(Exception):
    """An output that will never take a line again (stdout's reader went away, or a tool's has its count)."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


class Batch:
    """The deliveries in hand: a line per delivery and format, the sinks' metadata, what each sink took.

    One object per batch, the same on every retry: sinks that spread a batch
    over several files (path templates) know it by identity.
    """

    __slots__ = ("dropped", "due", "extra", "last_tag", "lines", "meta", "taken")

    def __init__(self, extra_formats: int, sinks: int) -> None:
        self.lines: list[bytes] = []  # in the binding's first format
        self.extra: list[list[bytes]] = [[] for _ in range(extra_formats)]  # other formats, parallel to lines
        self.meta: list[LineMeta] = []  # parallel to lines, when a sink wants it
        self.dropped = 0  # filtered out: settled with the batch, never written
        self.last_tag = 0  # the newest delivery in it (written or dropped)
        self.due = 0.0  # monotonic time by which it is written even if not full
        self.taken = [0] * sinks  # per sink: how many of lines it has taken

    def pending(self) -> int:
        return len(self.lines) + self.dropped


class BindingWorker:
    """Consumes one binding on its own thread: open a session, batch, write, settle, reconnect."""

    def __init__(
        self,
        binding: BindingConfig,
        broker: BrokerConfig,
        reconnect: ReconnectConfig,
        sinks: Sequence[Sink],
        source: Source,
        on_fatal: Callable[[BindingWorker, int], None] | None = None,
        backlog_interval: float | None = None,
    ) -> None:
        self.binding = binding
        self.broker = broker
        self.reconnect = reconnect
        self.sinks = tuple(sinks)
        self.source = source
        self.stop_requested = threading.Event()
        self.consuming = threading.Event()  # set while subscribed
        self.attempted = threading.Event()  # the first connection attempt is over, either way
        # Monotonic time by which this thread must be back in its loop: each
        # blocking step (pump, connect, sink write, backoff wait) moves it.
        self.due_by = time.monotonic() + source.connect_budget()
        self._on_fatal = on_fatal
        self.ended = False  # stopped on purpose (gave up, output closed): not wedged
        self.name = binding.name
        self.queue = binding.queue
        self.sink_names = tuple(sink.name for sink in self.sinks)
        self.stats = BindingStats()
        self._backlog_interval = backlog_interval  # None: never read the queue's depth
        self._batch_size = binding.batch_size
        # A session sends heartbeats only when pumped: pump several times per interval, so a
        # short heartbeat survives a loaded machine (at most once a second: idle cost).
        self._tick = min(IDLE_WAKEUP, broker.heartbeat / 4) if broker.heartbeat else IDLE_WAKEUP
        redactor = Redactor(binding.redact) if binding.redact is not None else None
        # One formatter per distinct format among the sinks (a sink may have its own): the
        # first fills batch.lines, any other its own list in batch.extra.
        formats = list(dict.fromkeys(binding.sink_formats))
        self._format_name = formats[0]
        self._format = make_formatter(formats[0], binding.name, redactor)
        self._extra_formats = [(f, make_formatter(f, binding.name, redactor)) for f in formats[1:]]
        self._sink_lines = [formats.index(f) for f in binding.sink_formats]  # per sink: which list it writes
        self._wanted = compile_filter(binding.keep, binding.drop)
        # Only some sinks (syslog, path templates) read a notification's fields: others skip the parse.
        self._wants_meta = any(sink.wants_meta for sink in self.sinks)
        self._log = get_logger(binding=binding.name, queue=binding.queue)
        self._thread = threading.Thread(target=self.run, name=f"binding-{binding.name}", daemon=True)
        self._batch = self._new_batch()
        self._session: Session | None = None
        self._session_opened = 0.0  # monotonic time the current (or last) session opened; 0.0: none
        # While the binding's thread writes to its sinks, the keepalive thread sends the session's heartbeats
        # (a slow sink must not cost the connection) and watches the sink's progress (slow is not stuck).
        # The session belongs to whoever holds _session_lock: the binding's thread, except during writes.
        self._session_lock = threading.Lock()
        self._in_write = threading.Event()
        self._writing: Sink | None = None
        self._retired = False
        self._keepalive = threading.Thread(target=self._keep_alive, name=f"keepalive-{binding.name}", daemon=True)
        self._max_redeliveries = binding.max_redeliveries
        self._redeliveries = RedeliveryCounter()

    # -- lifecycle, called from the supervisor's thread ---------------------

    def start(self) -> None:
        self._thread.start()
        self._keepalive.start()

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
        return len(self._batch.lines)

    def is_wedged(self, now: float, grace: float) -> bool:
        """True when the thread died (not on purpose), or overran its current step by more than *grace* seconds."""
        if self.ended:
            return False
        return not self._thread.is_alive() or now > self.due_by + grace

    # -- the binding's thread ----------------------------------------------

    def run(self) -> None:
        """Connect, consume and reconnect until stopped (or max_attempts is reached)."""
        connect_backoff = Backoff(self.reconnect)
        attempt = 0
        urls = self.broker.urls
        while not self.stop_requested.is_set():
            url = urls[attempt % len(urls)]
            attempt += 1
            self.due_by = time.monotonic() + self.source.connect_budget()
            self._session_opened = 0.0
            try:
                self._session_life(url, connect_backoff)
                continue
            except _OutputClosed as closed:
                self._end(closed.exit_code)
                return
            except Exception as exc:  # noqa: BLE001 - classified below; a bug must not silently end the thread
                delay = self._failed(url, exc, connect_backoff)
                refused = isinstance(exc, ConnectionRefusedError)
            finally:
                self.consuming.clear()
                self.attempted.set()
            failures = connect_backoff.attempts  # failures in a row: reset once consuming
            if self.reconnect.max_attempts is not None and failures >= self.reconnect.max_attempts:
                self._log.error("gave_up", attempts=failures)
                self._end(EXIT_GAVE_UP)
                return
            self.due_by = time.monotonic() + delay
            if refused:
                self._wait_for_port(urls[attempt % len(urls)], delay)
            else:
                self.stop_requested.wait(delay)
        self._retire()
        self._log.info("stopped")

    def _retire(self) -> None:
        self._retired = True
        self._in_write.set()  # wakes the keepalive thread to end

    def _wait_for_port(self, url: str, delay: float) -> None:
        """Wait up to *delay* s for the next attempt, or until the broker's port, which refused us, accepts."""
        deadline = time.monotonic() + delay
        address = self.source.endpoint(url)
        while not self.stop_requested.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                socket.create_connection(address, timeout=min(PORT_WATCH, remaining)).close()
            except OSError:
                self.stop_requested.wait(min(PORT_WATCH, max(0.0, deadline - time.monotonic())))
                continue
            self._log.info("broker_back", url=mask_url(url), waited=round(delay - remaining, 2))
            return

    def _failed(self, url: str, exc: Exception, connect_backoff: Backoff) -> float:
        """Count and log a session's failure; returns how long to wait before the next attempt.

        A session that had been up for STABLE_SESSION is connected again at once (the broker
        closed on us or restarted: each second counts, since services republish as soon as it is
        back); a connection that fails at once backs off.
        """
        kind = self.source.classify(exc)
        reason = self.source.describe(exc)
        was_up = self._session_opened and time.monotonic() - self._session_opened >= STABLE_SESSION
        if was_up and kind in (CONNECTION, CONSUMER_TIMEOUT):
            connect_backoff.reset()
            self.stats.reconnects["consumer_timeout" if kind == CONSUMER_TIMEOUT else "connection"] += 1
            self._log.warning("reconnect_scheduled", url=mask_url(url), reason=reason, attempt=0, retry_in=0.0)
            return 0.0
        if kind == CONSUMER_TIMEOUT:
            # A batch held unsettled past the broker's consumer_timeout: not a config matter.
            self.stats.reconnects["consumer_timeout"] += 1
            delay = connect_backoff.next_delay()
            self._log.warning("reconnect_scheduled", url=mask_url(url), reason=reason,
                              attempt=connect_backoff.attempts, retry_in=round(delay, 2))  # fmt: skip
        elif kind == REFUSED:
            # A config mismatch with the broker: say so loudly, retry slowly.
            self.stats.reconnects["refused"] += 1
            connect_backoff.next_delay()
            delay = self.reconnect.max_delay
            self._log.error("broker_refused", url=mask_url(url), reason=reason,
                            attempt=connect_backoff.attempts, retry_in=round(delay, 2))  # fmt: skip
        elif kind == CONNECTION:
            self.stats.reconnects["connection"] += 1
            delay = connect_backoff.next_delay()
            self._log.warning("reconnect_scheduled", url=mask_url(url), reason=reason,
                              attempt=connect_backoff.attempts, retry_in=round(delay, 2))  # fmt: skip
        else:
            self.stats.reconnects["error"] += 1
            delay = connect_backoff.next_delay()
            self._log.error("binding_failed", reason=reason, retry_in=round(delay, 2), exc_info=exc)
        return delay

    def _end(self, exit_code: int) -> None:
        """This binding stops for good and asks the supervisor to stop bridged with *exit_code*."""
        self.ended = True
        self._retire()
        if self._on_fatal is not None:
            self._on_fatal(self, exit_code)

    def _session_life(self, url: str, connect_backoff: Backoff) -> None:
        """One connection's life: returns when asked to stop, raises on any failure."""
        try:
            session = self.source.open(url, self._take, self.stop_requested)
        except Stopped:
            return
        self._session = session
        self._session_opened = time.monotonic()
        self._session_lock.acquire()
        clean = False
        try:
            self.attempted.set()  # subscribed, or waiting for a service: either way not a failed start
            self._consume(session, url, connect_backoff)
            clean = True
        except _OutputClosed:
            raise
        except Exception as exc:
            if self.source.classify(exc) == CONNECTION:  # the queue may go with the connection (a broker restart)
                self._write_unsettled()
            raise
        finally:
            self._session = None
            self._session_lock.release()
            self._batch = self._new_batch()  # unwritten deliveries are redelivered by the broker after close
            session.close(clean)

    def _now_consuming(self, session: Session, url: str, connect_backoff: Backoff) -> None:
        connect_backoff.reset()
        self.consuming.set()
        self._log.info("consuming", url=mask_url(url), **session.log_fields, prefetch=self.binding.prefetch)

    def _new_batch(self) -> Batch:
        return Batch(len(self._extra_formats), len(self.sinks))

    def _take(self, delivery: Delivery) -> bool:
        """The sessions' delivery callback: hold *delivery*; False once the batch is due for a flush by size."""
        self._on_delivery(delivery)
        batch = self._batch
        return len(batch.lines) + batch.dropped < self._batch_size

    def _on_delivery(self, delivery: Delivery) -> None:
        """A session's delivery callback: format and hold the line; no I/O here (the hot path)."""
        self.stats.received += 1
        if delivery.refuse is not None:
            self._refuse(delivery, delivery.refuse)
            return
        if delivery.error is not None:
            self._log.warning("properties_undecodable", reason=delivery.error, delivery_tag=delivery.tag)
            delivery.properties = {**delivery.properties, "bridged_error": delivery.error}
        if delivery.redelivered:
            self.stats.redelivered += 1
            if self._max_redeliveries is not None and self._set_aside(delivery):
                return
        batch = self._batch
        if not batch.lines and not batch.dropped:
            batch.due = time.monotonic() + self.binding.batch_delay
        batch.last_tag = delivery.tag
        if compressed(delivery):
            try:
                inflate(delivery)
            except Uninflatable as exc:
                self._marked(batch, delivery, str(exc))
                return
        if self._wanted is not None and not self._wanted(delivery):
            batch.dropped += 1
            return
        try:
            batch.lines.append(self._format(delivery))
        except Exception as exc:  # noqa: BLE001 - one odd message must not stop the binding
            batch.lines.append(self._failed_line(self._format_name, delivery, exc))
        if self._extra_formats:  # sinks with formats of their own: one line each, kept parallel
            for (fmt, formatter), lines in zip(self._extra_formats, batch.extra, strict=True):
                try:
                    lines.append(formatter(delivery))
                except Exception as exc:  # noqa: BLE001
                    lines.append(self._failed_line(fmt, delivery, exc))
        if self._wants_meta:
            batch.meta.append(notification_meta(delivery, self.binding.name))

    def _marked(self, batch: Batch, delivery: Delivery, why: str) -> None:
        """Hold *delivery* as a marked line in every format: its body as it came, and why it is not formatted."""
        self.stats.format_failures += 1
        self._log.warning("body_unreadable", reason=why, delivery_tag=delivery.tag)
        name = self.binding.name
        batch.lines.append(marked_line(delivery, why, self._format_name, name))
        for (fmt, _), lines in zip(self._extra_formats, batch.extra, strict=True):
            lines.append(marked_line(delivery, why, fmt, name))
        if self._wants_meta:
            batch.meta.append(notification_meta(delivery, name))

    def _failed_line(self, fmt: str, delivery: Delivery, exc: Exception) -> bytes:
        """The marked line written when a formatter failed on *delivery*."""
        self.stats.format_failures += 1
        self._log.warning("format_failed", reason=type(exc).__name__, format=fmt[:40])
        return safe_line(delivery, exc, fmt, self.binding.name)

    def _refuse(self, delivery: Delivery, why: str) -> None:
        """Reject a delivery that cannot be taken (the broker dead-letters it): never written, never a loop."""
        if self._session is not None:
            self._session.reject(delivery.tag)
        self.stats.dead_lettered += 1
        self._log.error("message_dead_lettered", reason=why, routing_key=delivery.routing_key)

    def _set_aside(self, delivery: Delivery) -> bool:
        """Reject (no requeue: to the dead-letter exchange) a message redelivered too often."""
        count = self._redeliveries.redeliveries(delivery)
        if self._max_redeliveries is None or count <= self._max_redeliveries or self._session is None:
            return False
        self._session.reject(delivery.tag)
        self.stats.dead_lettered += 1
        self._redeliveries.forget(delivery)
        self._log.error(
            "message_dead_lettered",
            redeliveries=count,
            routing_key=delivery.routing_key,
            message_id=delivery.properties.get("message_id"),
            size=len(delivery.body),
        )
        return True

    def _consume(self, session: Session, url: str, connect_backoff: Backoff) -> None:
        """The hot loop: pump the session (deliveries land in _on_delivery), flush when due, settle."""
        sink_backoff = Backoff(self.reconnect)  # a held batch lives on this connection only
        stop = self.stop_requested
        batch_size = self.binding.batch_size
        monotonic = time.monotonic
        tick = self._tick
        now = monotonic()
        retry_at = 0.0  # while a sink fails: when to try the held batch again
        backlog_interval = self._backlog_interval
        next_backlog = now if backlog_interval else float("inf")
        consuming = session.consuming
        if consuming:
            self._now_consuming(session, url, connect_backoff)
        while not stop.is_set():
            session.pump(self._wait_for_frames(now, retry_at, batch_size))  # deliveries land in _on_delivery
            now = monotonic()
            self.due_by = now + tick
            batch = self._batch
            pending = len(batch.lines) + batch.dropped
            if pending and (pending >= batch_size or now >= batch.due) and now >= retry_at:
                retry_at = self._try_flush(session, now, sink_backoff)
            if not consuming and session.consuming:
                consuming = True
                self._now_consuming(session, url, connect_backoff)
            if now >= next_backlog:
                self._read_backlog(session)
                next_backlog = now + backlog_interval  # type: ignore[operator]
        self._flush_before_close(session)

    def _wait_for_frames(self, now: float, retry_at: float, batch_size: int) -> float:
        """How long the loop may wait for the broker: a tick when idle, else until the batch is due (or retried)."""
        batch = self._batch
        pending = len(batch.lines) + batch.dropped
        if not pending:
            return self._tick
        if pending >= batch_size:
            wait = retry_at - now
        else:
            wait = max(batch.due, retry_at) - now
        return min(self._tick, wait) if wait > 0 else 0.0

    def _try_flush(self, session: Session, now: float, sink_backoff: Backoff) -> float:
        """Write the held batch and settle it; returns when to try again after a sink failure (0.0: done).

        A failing sink holds the batch (the broker keeps it unsettled, prefetch bounds it) and it is
        retried on the same connection: no redelivery, no duplicates.
        """
        try:
            self._flush(session)
        except SinkDone as exc:
            self._log.debug("output_done", unsettled=len(self._batch.lines))
            raise _OutputClosed(EXIT_OK) from exc
        except SinkClosed as exc:
            self._log.error("output_closed", reason=str(exc), held=len(self._batch.lines))
            raise _OutputClosed(EXIT_OUTPUT_CLOSED) from exc
        except SinkError as exc:
            delay = sink_backoff.next_delay()
            self._log.error("sink_failed", reason=str(exc), retry_in=round(delay, 2),
                            attempt=sink_backoff.attempts, held=len(self._batch.lines))  # fmt: skip
            return now + delay
        if sink_backoff.attempts:
            self._log.info("sink_recovered", failures=sink_backoff.attempts)
        sink_backoff.reset()
        return 0.0

    def _flush_before_close(self, session: Session) -> None:
        """Stopping: write and settle what is held; with a sink down it goes back to the queue on close."""
        if self._batch.pending():
            try:
                self._flush(session)
            except SinkError as exc:
                self._log.error("sink_failed", reason=str(exc), held=len(self._batch.lines), requeued=True)

    def _write_unsettled(self) -> None:
        """The connection is lost with a batch in hand: write it anyway, unsettled (at least once).

        Redelivered if its queue survived (a duplicate, at most this batch); if the queue did not
        survive (non-durable, a broker restart), these lines are the only copy left.
        """
        batch = self._batch
        if not batch.lines:
            return
        try:
            self._write(batch)
        except SinkError as exc:
            self._log.warning("sink_failed", reason=str(exc), held=len(batch.lines), requeued=True)
            return
        self._log.info("written_unsettled", lines=len(batch.lines),
                       hint="the connection was lost first: a duplicate if its queue redelivers them")  # fmt: skip

    def _read_backlog(self, session: Session) -> None:
        """The queue's depth and consumers, where the protocol can tell (deliveries keep flowing)."""
        backlog = session.backlog()
        if backlog is not None:
            self.stats.queue_ready, self.stats.queue_consumers = backlog

    def _flush(self, session: Session) -> None:
        """Write the batch to every sink, then settle it: written first, settled second."""
        batch = self._batch
        self._write(batch)
        session.settle(batch.last_tag)
        stats = self.stats
        stats.acked += len(batch.lines)  # written and settled; filtered ones are settled too, counted apart
        stats.filtered += batch.dropped
        stats.last_message_time = time.time()
        self._log.debug("batch_acked", lines=len(batch.lines), dropped=batch.dropped, delivery_tag=batch.last_tag)
        self._batch = self._new_batch()

    def _write(self, batch: Batch) -> None:
        """Every sink takes every line of *batch* it has not taken yet, or SinkError (what it took is counted).

        Meanwhile the session is the keepalive thread's (heartbeats go on however slow the sinks are).
        """
        self._session_lock.release()
        self._in_write.set()
        try:
            self._write_sinks(batch)
        finally:
            self._in_write.clear()
            self._writing = None
            self._session_lock.acquire()

    def _keep_alive(self) -> None:
        """The keepalive thread: idle until a write starts; then, each tick it lasts, a heartbeat, the wedge clock
        moved on while the sink shows progress, and the write aborted once a stop is asked for."""
        tick = self._tick
        while True:
            self._in_write.wait()
            if self._retired:
                return
            progress, aborted = -1, False
            while self._in_write.is_set() and not self._retired:
                time.sleep(tick)
                sink = self._writing
                if sink is None or not self._in_write.is_set():
                    break
                if self._session_lock.acquire(blocking=False):
                    try:
                        if self._session is not None:
                            self._session.keepalive()
                    except Exception:  # noqa: BLE001, S110 - a dead connection: the binding's thread finds out
                        pass
                    finally:
                        self._session_lock.release()
                if sink.progress != progress:
                    progress = sink.progress
                    self.due_by = time.monotonic() + tick  # slow but answering: not wedged
                if self.stop_requested.is_set() and not aborted:
                    aborted = True
                    sink.abort()  # stopping: the write gives up, the batch goes back to the queue

    def _write_sinks(self, batch: Batch) -> None:
        all_lines = (batch.lines, *batch.extra)
        meta = batch.meta if self._wants_meta else None
        taken = batch.taken
        stats = self.stats
        for index, sink in enumerate(self.sinks):
            lines = all_lines[self._sink_lines[index]]
            done = taken[index]
            if done < len(lines):
                self._writing = sink
                started = time.monotonic()
                try:
                    if done:
                        sink.write(lines[done:], meta[done:] if meta is not None else None, batch)
                    else:
                        sink.write(lines, meta, batch)
                except SinkError as exc:
                    taken[index] = done + exc.taken  # lines it did take are not given again
                    stats.written[sink.name] += exc.taken
                    if exc.unconfirmed:
                        stats.unconfirmed[sink.name] += exc.unconfirmed
                    stats.sink_failures[(sink.name, failure_reason(exc))] += 1
                    raise
                stats.write_latency[sink.name].observe(time.monotonic() - started)
                stats.written[sink.name] += len(lines) - done
                taken[index] = len(lines)
