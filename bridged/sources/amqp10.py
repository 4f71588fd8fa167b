"""AMQP 1.0 (amqp10:// brokers) for one binding: a receiver on its address, with qpid-proton's engine.

Link credit is the prefetch; deliveries arrive unsettled (at least once) and
are accepted in a batch once the sinks took it. A link the server sends
pre-settled (at most once) is refused. A delivery's ``delivery-count``
feeds ``max_redeliveries``; over it, the delivery is rejected (the broker
dead-letters it). qpid-proton is imported only here, in amqp10conn.py (the
connection) and in protonio.py (its C API).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from proton import Endpoint, Link, Message, ProtonException, Terminus

from bridged.amqp10conn import Amqp10Connection
from bridged.broker import RefusedWithHint, describe_error, io_timeout, passwords_of
from bridged.config import BindingConfig, BrokerConfig, Config
from bridged.delivery import Delivery
from bridged.protonio import (
    PN_ACCEPTED,
    PN_EOS,
    PN_REJECTED,
    decode_message,
    isnull,
    pn_delivery_partial,
    pn_delivery_pending,
    pn_delivery_readable,
    pn_delivery_settle,
    pn_delivery_settled,
    pn_delivery_update,
    pn_link_advance,
    pn_link_current,
    pn_link_recv,
)  # fmt: skip
from bridged.secrets import mask_url
from bridged.sources.session import CONNECTION, REFUSED, Deliver, Finding, Stopped

# While nothing arrives, wake at least this often (heartbeats are sent when the engine is ticked).
IDLE_WAKEUP = 1.0

# Brokers that answer a browsing link (distribution-mode copy) with copy and still consume: RabbitMQ 3.x
# holds every "browsed" message unacknowledged, away from the queue's own consumers, until the link ends.
FALSE_BROWSERS = ("RabbitMQ",)


class Amqp10Source:
    """Opens AMQP 1.0 sessions for one binding."""

    def __init__(self, binding: BindingConfig, broker: BrokerConfig) -> None:
        self.binding = binding
        self.broker = broker
        self._passwords = passwords_of(broker)
        heartbeat = broker.heartbeat
        self._tick = min(IDLE_WAKEUP, heartbeat / 4) if heartbeat else IDLE_WAKEUP

    def connect_budget(self) -> float:
        # connect, then open, begin and attach round trips, each bounded by the I/O timeout
        return self.broker.connect_timeout + 4 * io_timeout(self.broker)

    def open(self, url: str, deliver: Deliver, stop: threading.Event) -> Amqp10Session:
        """Connect and wait for the broker to attach the link (within the connect budget)."""
        session = Amqp10Session(self.binding, self.broker, url, deliver)
        clean = False
        try:
            budget = self.connect_budget()
            deadline = time.monotonic() + budget
            while not session.attached():
                if stop.is_set():
                    clean = True
                    raise Stopped()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no AMQP 1.0 link within {budget:g} s")
                session.pump(min(self._tick, max(0.0, deadline - time.monotonic())))
        except BaseException:
            session.close(clean)
            raise
        return session

    def endpoint(self, url: str) -> tuple[str, int]:
        parts = urlsplit(url)
        return parts.hostname or "localhost", parts.port or (5671 if parts.scheme == "amqp10s" else 5672)

    def classify(self, exc: BaseException) -> str | None:
        if isinstance(exc, RefusedWithHint):
            return REFUSED
        if isinstance(exc, OSError):  # ConnectionError, TimeoutError, socket errors
            return CONNECTION
        return None

    def describe(self, exc: BaseException) -> str:
        return describe_error(exc, self._passwords)


class Amqp10Session:
    """One connection and its receiver: after each read, the receiver's complete deliveries are taken in order."""

    consuming = True  # once attached, the link has credit: deliveries come

    def __init__(
        self, binding: BindingConfig, broker: BrokerConfig, url: str, deliver: Deliver | None, credit: int | None = None
    ) -> None:
        self.binding = binding
        self.log_fields = {"address": binding.address}
        self._deliver = deliver
        self._message = Message()
        self._unsettled: OrderedDict[int, Any] = OrderedDict()  # tag -> proton's pn_delivery_t pointer
        self._tag = 0
        self._parts: list[bytes] = []  # the transfers of the message at the head, so far
        self._size = 0  # its bytes so far
        self._max_size = broker.max_message_size
        self._address_key = f"bindings.{binding.name}.address: {binding.address!r}"
        self._wire = wire = Amqp10Connection(broker, url, binding.name)
        self._receiver = wire.session.receiver(f"bridged-{binding.name}")
        self._receiver.source.address = binding.address or ""  # always set for an amqp10:// broker
        self._browse = binding.browse
        if binding.browse:  # copies: the messages stay in the queue for its consumers (bridged tail)
            self._receiver.source.distribution_mode = Terminus.DIST_MODE_COPY
        else:
            self._receiver.snd_settle_mode = Link.SND_UNSETTLED  # at least once: kept by the broker until settled
        self._receiver.rcv_settle_mode = Link.RCV_FIRST
        self._receiver.open()
        # A browsing link gets credit only once the broker said it browses (attached()): nothing is taken before.
        self._credit = binding.prefetch if credit is None else credit
        if self._credit and not binding.browse:
            self._receiver.flow(self._credit)
            self._credit = 0
        wire.write()

    def attached(self) -> bool:
        self._check()
        if not self._receiver.state & Endpoint.REMOTE_ACTIVE:
            return False
        if self._browse:
            self._check_browsing()
        return True

    def _check_browsing(self) -> None:
        """A browsing link the broker attached: credit once it browses for real, else a refusal (nothing taken)."""
        product = self._wire.product
        mode = self._receiver.remote_source.distribution_mode
        if mode != Terminus.DIST_MODE_COPY or product.startswith(FALSE_BROWSERS):
            raise RefusedWithHint(
                f"{product or 'the broker'} does not browse address {self.binding.address!r} (its messages would be "
                "taken or held from its consumers): --consume takes them instead"
            )
        if self._credit:
            self._receiver.flow(self._credit)
            self._credit = 0
            self._wire.write()

    def pump(self, timeout: float) -> None:
        """Wait up to *timeout* for bytes, feed them to the engine, take the deliveries, send what is due."""
        try:
            self._wire.read(timeout)
        except ConnectionError:
            self._check()  # what the broker said as it closed, if it said anything
            raise
        self._take_deliveries()
        self._wire.flush()
        self._check()

    def _take_deliveries(self) -> None:
        """The deliveries at the head of the receiver, in order, on raw C pointers (no wrappers).

        A message larger than a frame arrives in several transfers: what has come of it is taken
        at once (so proton's buffers never fill and stall the connection) and kept here until the
        last transfer; past max_message_size its bytes are dropped and the whole message refused.
        """
        link = self._receiver._impl
        deliver = self._deliver
        parts = self._parts
        while True:
            delivery = pn_link_current(link)
            if isnull(delivery) or not pn_delivery_readable(delivery):
                return
            pending = pn_delivery_pending(delivery)
            if pending > 0:
                status, data = pn_link_recv(link, pending)
                if status < 0 and status != PN_EOS:
                    raise ConnectionError(f"proton could not read a delivery (error {status})")
                if data:
                    self._size += len(data)
                    if self._size <= self._max_size:
                        parts.append(bytes(data))
            if pn_delivery_partial(delivery):
                return  # the rest of it comes in later transfers
            pn_link_advance(link)
            if pn_delivery_settled(delivery) and not self._browse:  # settled by the broker: sent at most once
                raise RefusedWithHint(
                    f"the broker sends address {self.binding.address!r} pre-settled (at most once: a lost "
                    "connection would lose messages); bridged needs unsettled deliveries (at least once)"
                )
            self._tag += 1
            self._unsettled[self._tag] = delivery
            size, whole = self._size, b"".join(parts) if len(parts) != 1 else parts[0]
            parts.clear()
            self._size = 0
            if deliver is None:
                continue
            if size > self._max_size:
                deliver(Delivery(b"", tag=self._tag, refuse=f"{size} bytes, over max_message_size "
                                 f"({self._max_size})"))  # fmt: skip
            else:
                deliver(self._delivery(whole))

    def _delivery(self, data: bytes) -> Delivery:
        """What the formats read, from the AMQP 1.0 message (RabbitMQ's 0-9-1 mapping where it applies).

        One that cannot be read whole is written with a marker and settled like any other: never a
        redelivery loop."""
        properties, exchange, routing_key, redelivered, body, why = decode_message(self._message, data)
        return Delivery(body, exchange, routing_key, redelivered, self._tag, properties, why)

    def _check(self) -> None:
        self._wire.check(self._receiver, self._address_key)

    # -- settling ---------------------------------------------------------------------

    def settle(self, tag: int) -> None:
        """Accept and settle every delivery up to *tag*, then give the same credit back."""
        settled = 0
        unsettled = self._unsettled
        while unsettled:
            first = next(iter(unsettled))
            if first > tag:
                break
            delivery = unsettled.pop(first)
            if not self._browse:  # a copy has no outcome: it only ends
                pn_delivery_update(delivery, PN_ACCEPTED)
            pn_delivery_settle(delivery)
            settled += 1
        if settled:
            self._receiver.flow(settled)
            self._wire.write()

    def reject(self, tag: int) -> None:
        """Reject one delivery: the broker dead-letters it (or drops it), never delivers it again."""
        delivery = self._unsettled.pop(tag, None)
        if delivery is not None:
            pn_delivery_update(delivery, PN_REJECTED)
            pn_delivery_settle(delivery)
            self._receiver.flow(1)
            self._wire.write()

    def backlog(self) -> tuple[int, int] | None:
        return None  # AMQP 1.0 has no passive declare to read a depth with

    def keepalive(self) -> None:
        """From the keepalive thread during a long sink write (deliveries stay in the engine until the binding's
        thread takes them)."""
        self._wire.keepalive()

    def close(self, clean: bool) -> None:
        """Close the session (what is unsettled goes back to the broker) and the socket."""
        self._wire.close(clean, self._receiver)


# -- `--check --connect` --------------------------------------------------------------------


def check_connect(config: Config) -> list[Finding]:
    """Each URL, each binding's address: logged in and attached with no credit (nothing taken), then closed."""
    found = []
    for index, url in enumerate(config.broker.urls):
        where = "broker.url" if len(config.broker.urls) == 1 else f"broker.url[{index}]"
        for binding in config.bindings.values():
            problem = probe_address(config.broker, url, binding)
            if problem is not None:
                key = f"bindings.{binding.name}.address" if "(bindings." in problem else where
                found.append(Finding(f"{key}: {problem}"))
    return found


def probe_address(broker: BrokerConfig, url: str, binding: BindingConfig) -> str | None:
    """Log in to *url* and attach to *binding*'s address with no credit (taking nothing): why that failed, or None."""
    try:
        attach_without_credit(broker, url, binding)
    except OSError as exc:
        if exc.strerror:
            return f"cannot connect to {mask_url(url)}: {exc.strerror}"
        return f"{mask_url(url)}: {exc}"
    except (RefusedWithHint, ProtonException) as exc:
        return f"{mask_url(url)}: {exc}"
    return None


def attach_without_credit(broker: BrokerConfig, url: str, binding: BindingConfig) -> None:
    """Log in to *url* and attach to *binding*'s address with no credit, then detach: RefusedWithHint (a refusal,
    or a browse the broker cannot do), OSError (unreachable, lost, or no answer in time), or None."""
    session = Amqp10Session(binding, broker, url, None, credit=0)
    try:
        deadline = time.monotonic() + broker.connect_timeout
        while not session.attached():
            if time.monotonic() > deadline:
                raise TimeoutError(f"did not attach address {binding.address!r} within {broker.connect_timeout:g} s")
            session.pump(0.2)
    finally:
        session.close(True)
