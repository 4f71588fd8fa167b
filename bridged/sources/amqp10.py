"""AMQP 1.0 (amqp10:// brokers) for one binding: a receiver on its address, with qpid-proton's engine.

Link credit is the prefetch; deliveries arrive unsettled (at least once) and
are accepted in a batch once the sinks took it. A link the server sends
pre-settled (at most once) is refused. A delivery's ``delivery-count``
feeds ``max_redeliveries``; over it, the delivery is rejected (the broker
dead-letters it). qpid-proton is imported only here and in protonio.py.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import unquote, urlsplit

from proton import SSL, Connection, Endpoint, Link, Message, ProtonException, SSLDomain, Transport

from bridged.broker import HOSTNAME, RefusedWithHint, describe_error, io_timeout, passwords_of
from bridged.config import BindingConfig, BrokerConfig, Config
from bridged.configkit import TLSConfig
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

# A clean close waits this long for the broker's close-ok before dropping the socket.
CLOSE_TIMEOUT = 2.0
# While nothing arrives, wake at least this often (heartbeats are sent when the engine is ticked).
IDLE_WAKEUP = 1.0

# Conditions that a retry will not change: say so, and retry at the slow pace.
REFUSED_CONDITIONS = {
    "amqp:unauthorized-access": "the broker refused the login (user or password) or access to the address",
    "amqp:not-found": "the address does not exist on the broker",
    "amqp:not-allowed": "the broker does not allow this link",
    "amqp:resource-locked": "the address is locked by another consumer",
}


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
    """One connection and its receiver on proton's engine, driven by our own socket loop.

    No reactor and no event dispatch: after each read, the receiver's
    complete deliveries are taken in order (the reactor's Python event
    machinery cost more than everything else per message).
    """

    consuming = True  # once attached, the link has credit: deliveries come

    def __init__(
        self, binding: BindingConfig, broker: BrokerConfig, url: str, deliver: Deliver | None, credit: int | None = None
    ) -> None:
        self.binding = binding
        self.log_fields = {"address": binding.address}
        self._deliver = deliver
        parts = urlsplit(url)
        tls = parts.scheme == "amqp10s"
        host = parts.hostname or "localhost"
        port = parts.port or (5671 if tls else 5672)
        self._message = Message()
        self._unsettled: OrderedDict[int, Any] = OrderedDict()  # tag -> proton's pn_delivery_t pointer
        self._tag = 0
        self._parts: list[bytes] = []  # the transfers of the message at the head, so far
        self._size = 0  # its bytes so far
        self._max_size = broker.max_message_size
        self._sock = socket.create_connection((host, port), timeout=broker.connect_timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)
        self._timeout = io_timeout(broker)
        self._connection = Connection()
        self._connection.container = f"bridged {binding.name}@{HOSTNAME}"
        self._connection.hostname = host
        if parts.username:
            self._connection.user = unquote(parts.username)
            self._connection.password = unquote(parts.password or "")
        self._transport = Transport()
        if broker.heartbeat:
            self._transport.idle_timeout = broker.heartbeat
        sasl = self._transport.sasl()
        sasl.allowed_mechs("PLAIN" if parts.username else "ANONYMOUS")
        sasl.allow_insecure_mechs = True  # PLAIN without TLS, as amqp:// sends its password
        if tls:
            ssl = SSL(self._transport, _ssl_domain(broker.tls))
            ssl.peer_hostname = broker.tls.server_hostname or host
        self._transport.bind(self._connection)
        self._connection.open()
        self._session = session = self._connection.session()
        session.open()
        self._receiver = session.receiver(f"bridged-{binding.name}")
        self._receiver.source.address = binding.address or ""  # always set for an amqp10:// broker
        self._receiver.snd_settle_mode = Link.SND_UNSETTLED  # at least once: the broker keeps it until we settle
        self._receiver.rcv_settle_mode = Link.RCV_FIRST
        self._receiver.open()
        if credit is None or credit:
            self._receiver.flow(binding.prefetch if credit is None else credit)
        self._write()

    def attached(self) -> bool:
        self._check()
        return bool(self._receiver.state & Endpoint.REMOTE_ACTIVE)

    def pump(self, timeout: float) -> None:
        """Wait up to *timeout* for bytes, feed them to the engine, take the deliveries, send what is due."""
        transport = self._transport
        capacity = transport.capacity()
        if capacity > 0 and self._poll.poll(int(timeout * 1000)):
            try:
                data = self._sock.recv(capacity)  # never more than the engine takes in (a big message's frames)
            except (BlockingIOError, InterruptedError):
                data = None
            if data == b"":
                transport.close_tail()
                self._check()
                raise ConnectionError("the broker closed the connection")
            if data:
                transport.push(data)
        self._take_deliveries()
        transport.tick(time.monotonic())  # heartbeats out, and the broker's idle timeout checked
        self._write()
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
            if pn_delivery_settled(delivery):  # settled by the broker already: sent at most once
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

    def _write(self) -> None:
        transport = self._transport
        while True:
            pending = transport.pending()
            if pending <= 0:
                return
            data = transport.peek(pending) or b""
            self._sock.settimeout(self._timeout)
            sent = self._sock.send(data)
            transport.pop(sent)

    def _check(self) -> None:
        """Raise what the broker said: a refusal (retrying will not help) or a lost connection."""
        # RabbitMQ 3.x ends only the session when its connection is closed from the broker side
        # (rabbitmqctl close_all_connections): the socket stays open, so every level is checked.
        for where, endpoint in (("link", self._receiver), ("session", self._session),
                                ("connection", self._connection)):  # fmt: skip
            if endpoint.state & Endpoint.REMOTE_CLOSED:
                if endpoint.remote_condition is not None:
                    raise _failure(endpoint.remote_condition, where, self.binding)
                raise ConnectionError(f"the broker closed the {where}")
        if self._transport.condition is not None:
            raise _failure(self._transport.condition, "transport", self.binding)

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
            pn_delivery_update(delivery, PN_ACCEPTED)
            pn_delivery_settle(delivery)
            settled += 1
        if settled:
            self._receiver.flow(settled)
            self._write()

    def reject(self, tag: int) -> None:
        """Reject one delivery: the broker dead-letters it (or drops it), never delivers it again."""
        delivery = self._unsettled.pop(tag, None)
        if delivery is not None:
            pn_delivery_update(delivery, PN_REJECTED)
            pn_delivery_settle(delivery)
            self._receiver.flow(1)
            self._write()

    def backlog(self) -> tuple[int, int] | None:
        return None  # AMQP 1.0 has no passive declare to read a depth with

    def keepalive(self) -> None:
        """From the keepalive thread during a long sink write: take in what arrived (deliveries stay in the
        engine until the binding's thread takes them), so the broker's idle timeout is met, and send ours."""
        transport = self._transport
        capacity = transport.capacity()
        if capacity > 0 and self._poll.poll(0):
            data = self._sock.recv(capacity)
            if data:
                transport.push(data)
        transport.tick(time.monotonic())
        self._write()

    def close(self, clean: bool) -> None:
        """Close the session (what is unsettled goes back to the broker) and the socket."""
        try:
            if clean:
                self._receiver.close()
                self._connection.close()
                self._write()
                deadline = time.monotonic() + CLOSE_TIMEOUT
                while not self._connection.state & Endpoint.REMOTE_CLOSED and time.monotonic() < deadline:
                    if not self._poll.poll(100):
                        continue
                    data = self._sock.recv(4096)
                    if not data:
                        break
                    self._transport.push(data)
        except (OSError, ProtonException):
            pass
        finally:
            self._sock.close()


def _failure(condition: Any, where: str, binding: BindingConfig) -> Exception:
    """A refusal the binding cannot retry past (named, with the key to change), or a lost connection."""
    name = getattr(condition, "name", None)
    description = getattr(condition, "description", None) or ""
    text = f"{where}: {name}: {description}".rstrip(": ")
    hint = REFUSED_CONDITIONS.get(name or "")
    if hint is None:
        return ConnectionError(text)
    if name == "amqp:not-found":
        hint += f" (bindings.{binding.name}.address: {binding.address!r})"
    return RefusedWithHint(f"{hint} ({text})")


def _ssl_domain(tls: TLSConfig) -> SSLDomain:
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    if tls.ca_file:
        domain.set_trusted_ca_db(tls.ca_file)
    if tls.cert_file and tls.key_file:
        domain.set_credentials(tls.cert_file, tls.key_file, None)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME if tls.verify else SSLDomain.ANONYMOUS_PEER)
    return domain


# -- `--check --connect` --------------------------------------------------------------------


def check_connect(config: Config) -> list[Finding]:
    """Each URL, each binding's address: logged in and attached with no credit (nothing taken), then closed."""
    found = []
    for index, url in enumerate(config.broker.urls):
        where = "broker.url" if len(config.broker.urls) == 1 else f"broker.url[{index}]"
        for binding in config.bindings.values():
            problem = probe_address(config.broker, url, binding)
            if problem is not None:
                key = f"bindings.{binding.name}.address" if "amqp:not-found" in problem else where
                found.append(Finding(f"{key}: {problem}"))
    return found


def probe_address(broker: BrokerConfig, url: str, binding: BindingConfig) -> str | None:
    """Log in to *url* and attach to *binding*'s address with no credit (taking nothing): why that failed, or None."""
    try:
        session = Amqp10Session(binding, broker, url, None, credit=0)
    except OSError as exc:
        return f"cannot connect to {mask_url(url)}: {exc.strerror or exc}"
    try:
        deadline = time.monotonic() + broker.connect_timeout
        while not session.attached():
            if time.monotonic() > deadline:
                return f"{mask_url(url)} did not attach address {binding.address!r} within {broker.connect_timeout:g} s"
            session.pump(0.2)
    except (RefusedWithHint, ConnectionError, OSError, ProtonException) as exc:
        return f"{mask_url(url)}: {exc}"
    finally:
        session.close(True)
    return None
