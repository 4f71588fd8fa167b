"""AMQP 0-9-1 (RabbitMQ) for one binding: connect, declare, bind, consume, ack.

Deliveries are parsed by amqpio.DeliveryReader (py-amqp's channel callback
only for what it hands to py-amqp: bodies in several frames, the fallback
reader) and reach the worker as Delivery records; no kombu Message.
The binding's queue and its bindings are declared on every connect (a
restart may have wiped them). Another service's exchange is only checked,
passively: while it is missing the session waits, checking on a side
channel (backoff.ProbeSchedule: often just after a connect, then seldom),
and binds it once its service declared it. With queue_declare: passive the
queue itself is the services' (oslo.messaging declares <topic>.<priority>):
nothing is declared or bound, the session waits for the queue and consumes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import amqp
from amqp import exceptions as amqp_errors

from bridged.amqpio import FAST_PATH_ENV, frame_reader, tolerate_undecodable_properties
from bridged.backoff import ProbeSchedule
from bridged.broker import (
    CONNECTION_ERRORS,
    REFUSED_ERRORS,
    connect,
    declare_queue,
    describe_error,
    exchange_exists,
    io_timeout,
    passwords_of,
    refusal_hint,
)  # fmt: skip
from bridged.config import BindingConfig, BrokerConfig, Config
from bridged.config import Source as ExchangeSource
from bridged.delivery import Delivery
from bridged.log import get_logger
from bridged.policies import ApiUnavailable, ManagementApi
from bridged.secrets import mask_url
from bridged.sources.session import CONNECTION, CONSUMER_TIMEOUT, REFUSED, Deliver, Finding

# A clean close waits this long for the broker's close-ok before dropping the socket.
CLOSE_TIMEOUT = 2.0
# While nothing arrives, wake at least this often: py-amqp sends heartbeats only when ticked.
IDLE_WAKEUP = 1.0


def _is_consumer_timeout(exc: BaseException) -> bool:
    """RabbitMQ's consumer_timeout closes the channel with a 406 that is no config refusal."""
    text = str(getattr(exc, "reply_text", "") or "")
    return isinstance(exc, amqp_errors.PreconditionFailed) and "acknowledgement" in text and "timed out" in text


class Amqp091Source:
    """Opens AMQP 0-9-1 sessions for one binding."""

    def __init__(self, binding: BindingConfig, broker: BrokerConfig) -> None:
        self.binding = binding
        self.broker = broker
        self._passwords = passwords_of(broker)
        self._log = get_logger(binding=binding.name, queue=binding.queue)
        # py-amqp marks undecodable properties on the message (amqpio.py): read at every delivery
        self.tolerant = tolerate_undecodable_properties()
        if not self.tolerant:
            self._log.warning("amqp_properties_strict", hint=f"py-amqp {amqp.__version__} differs from what bridged "
                              "patches: a message whose properties it cannot decode costs the connection")  # fmt: skip

    def connect_budget(self) -> float:
        # connect, then a handful of declare round trips, each bounded by the I/O timeout
        return self.broker.connect_timeout + 4 * io_timeout(self.broker)

    def open(self, url: str, deliver: Deliver, stop: threading.Event) -> Amqp091Session:
        return Amqp091Session(self, url, deliver)

    def endpoint(self, url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        return parts.hostname or "localhost", parts.port or (5671 if parts.scheme == "amqps" else 5672)

    def classify(self, exc: BaseException) -> str | None:
        if isinstance(exc, REFUSED_ERRORS):
            return CONSUMER_TIMEOUT if _is_consumer_timeout(exc) else REFUSED
        if isinstance(exc, CONNECTION_ERRORS):
            return CONNECTION
        return None

    def describe(self, exc: BaseException) -> str:
        text = describe_error(exc, self._passwords)
        if isinstance(exc, amqp_errors.AccessRefused) and "login" in text.lower():
            text += (" (the user and password of broker.url, or broker.password / broker.password_file; "
                     "rabbitmqctl list_users)")  # fmt: skip
        return text


class Amqp091Session:
    """One connection: a channel to consume on, and a side channel for passive checks and queue depth."""

    log_fields: dict[str, Any] = {}  # noqa: RUF012 - read only

    def __init__(self, source: Amqp091Source, url: str, deliver: Deliver) -> None:
        self.binding = source.binding
        self.consuming = False
        self._deliver = deliver
        self._tolerant = source.tolerant
        self._log = source._log
        heartbeat = source.broker.heartbeat
        self._tick = min(IDLE_WAKEUP, heartbeat / 4) if heartbeat else IDLE_WAKEUP
        self._conn = conn = connect(source.broker, url, self.binding.name)
        try:
            self._channel = conn.channel()
            self._channel.auto_decode = False  # bodies stay bytes; formats decode safely
            self._side: amqp.Channel | None = None
            self._missing: list[ExchangeSource] = []  # passive exchanges not declared yet by their service
            self._queue_missing = False  # queue_declare: passive, and no service declared the queue yet
            self._logged_missing: set[str] = set()
            self._read_frames, fast = frame_reader(conn, self._channel.channel_id, deliver)
            if not fast:
                self._log.warning("amqp_fast_path_off", hint=f"reading through drain_events() (slower): "
                                  f"{FAST_PATH_ENV}=0 or py-amqp's internals changed")  # fmt: skip
            now = time.monotonic()
            self._next_heartbeat = now + self._tick
            self._probes = ProbeSchedule(now)  # a new connection: services may be declaring things right now
            self._declare()
        except BaseException:
            conn.collect()
            raise

    # -- declarations ----------------------------------------------------------------

    def _declare(self) -> None:
        """Check or create the exchanges; with one present, declare the queue, bind and consume.

        queue_declare: passive: consume the services' queue once it exists, declaring and binding nothing.
        """
        b = self.binding
        if b.queue_declare == "passive":
            declared = self._passive_queue()
            if declared is None:
                self._queue_missing = True
                self._log.warning("queue_missing", hint=f"waiting for the services to declare it "
                                  f"(bindings.{b.name}.queue_declare: passive)")  # fmt: skip
                return
            self._subscribe([], declared)
            return
        if b.exchange_declare == "create":
            for source in b.sources:
                if not source.exchange.startswith("amq."):
                    self._create_exchange(source)
            present = list(b.sources)
        else:
            present, self._missing = self._check_exchanges(list(b.sources))
            self._log_missing()
            if not present:
                return  # waiting for a service to declare one: pump() checks again
        self._subscribe(present)

    def _subscribe(self, present: list[ExchangeSource], declared: Any = None) -> None:
        """Declare the queue (unless *declared*: the services' queue, checked passively), bind, consume."""
        b = self.binding
        channel = self._channel
        if declared is None:
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
        channel.basic_qos(0, b.prefetch, False)
        channel.basic_consume(b.queue, callback=self._on_message)
        self.consuming = True

    def _create_exchange(self, source: ExchangeSource) -> None:
        """exchange_declare: create, for an exchange bridged owns; a 406 names the keys to change."""
        b = self.binding
        with refusal_hint(
            f"exchange {source.exchange!r} exists with other settings: make {source.where}.exchange_type and "
            f"bindings.{b.name}.exchange_durable match it, or set bindings.{b.name}.exchange_declare: passive"
        ):
            self._channel.exchange_declare(source.exchange, source.exchange_type, durable=b.exchange_durable,
                                           auto_delete=False)  # fmt: skip

    def _bind(self, channel: amqp.Channel, source: ExchangeSource) -> None:
        for key in source.routing_keys:
            channel.queue_bind(self.binding.queue, source.exchange, key)

    def _side_channel(self) -> amqp.Channel:
        """The channel for passive checks and queue depth: a 404 there never touches the consuming channel.

        py-amqp reopens a channel the broker closed (a 404 does): it is reused, never replaced.
        """
        side = self._side
        if side is None or not side.is_open:
            side = self._side = self._conn.channel()
            side.auto_decode = False
        return side

    def _passive_queue(self) -> Any:
        """The services' queue by a passive declare on the side channel (its counts), None while it does not exist."""
        try:
            return self._side_channel().queue_declare(self.binding.queue, passive=True)
        except amqp_errors.NotFound:
            return None

    def _check_exchanges(self, sources: list[ExchangeSource]) -> tuple[list[ExchangeSource], list[ExchangeSource]]:
        """Passive declares on the side channel: (present, missing).

        bridged never creates another service's exchange: declaring it first
        with other arguments (OpenStack's are not durable) would break every
        later declaration by that service.
        """
        present, missing = [], []
        for source in sources:
            try:
                self._side_channel().exchange_declare(source.exchange, source.exchange_type, passive=True)
                present.append(source)
            except amqp_errors.NotFound:
                missing.append(source)
        return present, missing

    def _log_missing(self) -> None:
        for source in self._missing:
            if source.exchange not in self._logged_missing:
                self._logged_missing.add(source.exchange)
                self._log.warning(
                    "exchange_missing",
                    exchange=source.exchange,
                    hint=f"waiting for its service to declare it (bindings.{self.binding.name}.exchange_declare:"
                    " passive)",
                )

    def _probe_missing(self) -> None:
        """Consume the queue, or bind the exchanges, that were missing and have appeared since."""
        if self._queue_missing:
            declared = self._passive_queue()
            if declared is not None:
                self._queue_missing = False
                self._log.info("queue_found")
                self._subscribe([], declared)
            return
        present, self._missing = self._check_exchanges(self._missing)
        if not present:
            return
        for source in present:
            if source.exchange in self._logged_missing:
                self._log.info("exchange_found", exchange=source.exchange)
        if self.consuming:
            for source in present:
                self._bind(self._side_channel(), source)
        else:
            self._subscribe(present)

    # -- the Session protocol ------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        """Read and dispatch frames for up to *timeout* s; heartbeats and missing exchanges when due."""
        try:
            self._read_frames(self._conn, timeout)  # deliveries land in _on_message
        except TimeoutError:
            pass  # a frame stalled midway for SO_RCVTIMEO; its start is kept for the next read
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._conn.heartbeat_tick()
            self._next_heartbeat = now + self._tick
        if (self._missing or self._queue_missing) and self._probes.due(now):
            self._probe_missing()
            self._probes.checked(time.monotonic())

    def _on_message(self, message: Any) -> None:
        """py-amqp's delivery callback (a body in several frames, the fallback reader): the reader's record."""
        info = message.delivery_info
        self._deliver(Delivery(message.body, info["exchange"], info["routing_key"], info["redelivered"],
                               info["delivery_tag"], message.properties,
                               message.undecodable if self._tolerant else None))  # fmt: skip

    def settle(self, tag: int) -> None:
        self._channel.basic_ack(tag, multiple=True)

    def reject(self, tag: int) -> None:
        self._channel.basic_reject(tag, requeue=False)

    def keepalive(self) -> None:
        """A heartbeat frame, from the keepalive thread during a long sink write (nothing is read meanwhile:
        the broker's own heartbeats wait in the socket and count when the binding's thread reads again)."""
        self._conn.send_heartbeat()

    def backlog(self) -> tuple[int, int] | None:
        """The queue's depth and consumers, by a passive declare on the side channel."""
        if not self.consuming:
            return None
        declared = self._side_channel().queue_declare(self.binding.queue, passive=True)
        return declared.message_count, declared.consumer_count

    def close(self, clean: bool) -> None:
        conn = self._conn
        try:
            if clean and conn.transport is not None and conn.transport.sock is not None:
                conn.transport.sock.settimeout(CLOSE_TIMEOUT)
                conn.close()
            else:
                conn.collect()
        except CONNECTION_ERRORS:
            conn.collect()


# -- `--check --connect` --------------------------------------------------------------------


def check_connect(config: Config) -> Iterator[Finding]:
    """Log in with every URL, check each binding's exchanges and queue (changing nothing).

    An exchange or a services' queue that does not exist yet is a warning: the daemon waits for it.
    """
    conn, url = None, ""
    for index, candidate in enumerate(config.broker.urls):
        where = "broker.url" if len(config.broker.urls) == 1 else f"broker.url[{index}]"
        problem, opened = _log_in(config, candidate)
        if problem is not None:
            yield Finding(f"{where}: {problem}")
        elif conn is None:
            conn, url = opened, candidate  # the first that works checks the bindings
        elif opened is not None:
            opened.collect()
    if conn is None:
        return
    passive = [b for b in config.bindings.values() if b.queue_declare == "passive"]
    try:
        for binding in config.bindings.values():
            if binding.queue_declare != "passive":
                yield from _binding_findings(conn, binding)
        missing = [b for b in passive if not _queue_exists(conn, b.queue)]
    finally:
        conn.collect()
    if missing:
        queues = ", ".join(f"{b.queue} (bindings.{b.name}.queue)" for b in missing)
        yield Finding(f"not declared yet (no service has sent to them; bridged waits for them): {queues}", warning=True)
    if passive:
        yield from _policy_findings(url, passive)


def _log_in(config: Config, url: str) -> tuple[str | None, amqp.Connection | None]:
    try:
        return None, connect(config.broker, url, "check")
    except (amqp_errors.AccessRefused, amqp_errors.NotAllowed) as exc:
        reason = describe_error(exc, passwords_of(config.broker))
        return f"{mask_url(url)} refused the login (user, password or vhost): {reason}", None
    except (*REFUSED_ERRORS, *CONNECTION_ERRORS) as exc:
        return f"cannot connect to {mask_url(url)}: {describe_error(exc, passwords_of(config.broker))}", None


def _queue_exists(conn: amqp.Connection, queue: str) -> bool:
    """A passive declare on a channel of its own (a 404 closes the channel)."""
    channel = conn.channel()
    try:
        channel.queue_declare(queue, passive=True)
    except amqp_errors.NotFound:
        return False
    channel.close()
    return True


def _binding_findings(conn: amqp.Connection, binding: BindingConfig) -> Iterator[Finding]:
    where = f"bindings.{binding.name}"
    for source in binding.sources:
        if source.exchange.startswith("amq.") or binding.exchange_declare == "passive":
            if not exchange_exists(conn, source.exchange):
                key = source.where if ".exchanges." in source.where else f"{source.where}.exchange"
                yield Finding(f"{key}: not deployed yet: exchange {source.exchange!r} does not exist (bridged waits "
                              "for its service to declare it; exchange_declare: create for one bridged owns)",
                              warning=True)  # fmt: skip
    channel = conn.channel()
    try:
        channel.queue_declare(binding.queue, passive=True)
    except amqp_errors.NotFound:
        return  # bridged declares it on its first connect
    except amqp_errors.ResourceLocked:
        yield Finding(f"{where}.queue: queue {binding.queue!r} is exclusive to another connection")
        return
    channel = conn.channel()
    try:
        declare_queue(channel, binding)  # it exists: the same arguments change nothing, others are refused
        channel.close()
    except REFUSED_ERRORS as exc:
        yield Finding(f"{where}.queue: {describe_error(exc, ())}")
    except amqp_errors.ResourceLocked:
        yield Finding(f"{where}.queue: queue {binding.queue!r} is exclusive to another connection")


def _policy_findings(url: str, bindings: list[BindingConfig]) -> Iterator[Finding]:
    """The services' queues grow without bound while bridged is down unless a policy bounds them."""
    api = ManagementApi(url)
    unbounded = []
    for binding in bindings:
        try:
            if api.bound(binding.queue) is None:
                unbounded.append(binding)
        except ApiUnavailable as exc:
            yield Finding(
                f"{mask_url(url)}: cannot tell whether a policy bounds the queues of queue_declare: passive "
                f"({exc}); enable rabbitmq_management or see rabbitmqctl list_policies",
                warning=True,
            )
            return
    if unbounded:
        queues = ", ".join(f"{b.queue} (bindings.{b.name}.queue)" for b in unbounded)
        yield Finding(f"no policy bounds {queues}: while bridged is down they grow without limit (e.g. rabbitmqctl "
                      "set_policy --apply-to queues bridged-bounded '^bridged(_versioned)?\\.' "
                      "'{\"max-length\": 1000000, \"message-ttl\": 86400000}')", warning=True)  # fmt: skip
