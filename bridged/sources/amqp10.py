"""AMQP 1.0 (amqp10:// brokers): read one address with qpid-proton, settle only what every sink took.

The binding's worker is the AMQP 0-9-1 one with another session: the same
batching, formats, filters, sinks, stats, backoff and dead-lettering, fed by
a proton receiver. Link credit is the prefetch; deliveries arrive unsettled
(at least once) and are accepted in a batch once the sinks took it. A link
the server sends pre-settled (at most once) is refused. A delivery's
``delivery-count`` feeds ``max_redeliveries``; over it, the delivery is
rejected (the broker dead-letters it). qpid-proton is imported only here.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

from cproton import (  # type: ignore[import-untyped]  # proton's C API, as its own classes call it
    PN_ACCEPTED,
    PN_REJECTED,
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
    pn_message_annotations,
    pn_message_body,
    pn_message_decode,
    pn_message_get_content_encoding,
    pn_message_get_content_type,
    pn_message_get_creation_time,
    pn_message_get_delivery_count,
    pn_message_get_reply_to,
    pn_message_get_subject,
    pn_message_get_user_id,
    pn_message_is_durable,
    pn_message_is_first_acquirer,
    pn_message_properties,
)  # fmt: skip
from proton import SSL, Connection, Endpoint, Link, Message, ProtonException, SSLDomain, Transport
from proton._data import Data

from bridged.backoff import Backoff
from bridged.broker import HOSTNAME, RefusedWithHint, io_timeout
from bridged.secrets import mask_url
from bridged.sources.amqp091 import CLOSE_TIMEOUT, BindingConsumer, _Stopped

# Conditions that a retry will not change: say so, and retry at the slow pace.
REFUSED_CONDITIONS = {
    "amqp:unauthorized-access": "the broker refused the login (user or password) or access to the address",
    "amqp:not-found": "the address does not exist on the broker",
    "amqp:not-allowed": "the broker does not allow this link",
    "amqp:resource-locked": "the address is locked by another consumer",
}


class Amqp10Consumer(BindingConsumer):
    """One binding on an AMQP 1.0 broker: a receiver on `address`, credit = prefetch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backlog_interval = None  # AMQP 1.0 has no passive declare to read a depth with

    def _session(self, url: str, connect_backoff: Backoff) -> None:
        """One connection's life: open, wait for the link, consume until stopped; raises on any failure."""
        link = _Engine(self, url)
        clean = False
        try:
            deadline = time.monotonic() + self._connect_budget()
            while not link.attached():
                if self.stop_requested.is_set():
                    raise _Stopped()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no AMQP 1.0 link within {self._connect_budget():g} s")
                link.pump(min(self._tick, max(0.0, deadline - time.monotonic())))
            connect_backoff.reset()
            self.consuming.set()
            self._log.info("consuming", url=mask_url(url), address=self.binding.address, prefetch=self.binding.prefetch)
            self._pump(link)
            clean = True
        except _Stopped:
            clean = True
        finally:
            self._reset_batch()  # unsettled deliveries go back to the broker when the link closes
            link.close(clean)

    def _pump(self, link: _Engine) -> None:
        """The loop of _consume, on proton's engine: read, flush on size or age, retry sinks, settle."""
        sink_backoff = Backoff(self.reconnect)
        retry_at = 0.0
        batch_size = self.binding.batch_size
        stop = self.stop_requested
        monotonic = time.monotonic
        tick = self._tick
        now = monotonic()
        while not stop.is_set():
            timeout = self._wait_for_frames(now, retry_at, batch_size)
            link.pump(min(max(timeout, 0.0), tick))  # deliveries land in _on_message
            now = monotonic()
            self.due_by = now + tick
            pending = len(self._lines) + self._dropped
            if pending and (pending >= batch_size or now >= self._flush_at) and now >= retry_at:
                retry_at = self._try_flush(link, now, sink_backoff)
        self._flush_before_close(link)


class _Engine:
    """One connection and its receiver on proton's engine, driven by our own socket loop.

    No reactor and no event dispatch: after each read, the receiver's
    complete deliveries are taken in order (the reactor's Python event
    machinery cost more than everything else per message). Also the
    settling side of the batch code (basic_ack, basic_reject).
    """

    def __init__(self, consumer: Any, url: str, credit: int | None = None) -> None:
        self._consumer = consumer  # an Amqp10Consumer (its binding, broker and _on_message)
        broker = consumer.broker
        binding = consumer.binding
        parts = urlsplit(url)
        tls = parts.scheme == "amqp10s"
        host = parts.hostname or "localhost"
        port = parts.port or (5671 if tls else 5672)
        self._message = Message()
        self._unsettled: OrderedDict[int, Any] = OrderedDict()  # tag -> proton's pn_delivery_t pointer
        self._tag = 0
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
        self._receiver.source.address = binding.address
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
        if self._poll.poll(int(timeout * 1000)):
            try:
                data = self._sock.recv(max(transport.capacity(), 4096))
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
        """Every complete delivery at the head of the receiver, in order, on raw C pointers (no wrappers)."""
        link = self._receiver._impl
        on_message = self._consumer._on_message
        while True:
            delivery = pn_link_current(link)
            if isnull(delivery) or pn_delivery_partial(delivery) or not pn_delivery_readable(delivery):
                return
            status, data = pn_link_recv(link, pn_delivery_pending(delivery))
            pn_link_advance(link)
            if status < 0:
                raise ConnectionError(f"proton could not read a delivery (error {status})")
            if pn_delivery_settled(delivery):  # settled by the broker already: sent at most once
                raise RefusedWithHint(
                    f"the broker sends address {self._consumer.binding.address!r} pre-settled (at most once: a lost "
                    "connection would lose messages); bridged needs unsettled deliveries (at least once)"
                )
            self._tag += 1
            self._unsettled[self._tag] = delivery
            on_message(self._delivery(bytes(data)))

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
                    raise _failure(endpoint.remote_condition, where, self._consumer.binding)
                raise ConnectionError(f"the broker closed the {where}")
        if self._transport.condition is not None:
            raise _failure(self._transport.condition, "transport", self._consumer.binding)

    # -- what the batch code calls -------------------------------------------------

    def basic_ack(self, tag: int, multiple: bool = True) -> None:
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

    def basic_reject(self, tag: int, requeue: bool = False) -> None:
        """Reject one delivery: the broker dead-letters it (or drops it), never delivers it again."""
        delivery = self._unsettled.pop(tag, None)
        if delivery is not None:
            pn_delivery_update(delivery, PN_REJECTED)
            pn_delivery_settle(delivery)
            self._receiver.flow(1)
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

    def _delivery(self, data: bytes) -> _Delivery:
        """What the formats read, from the AMQP 1.0 message (RabbitMQ's 0-9-1 mapping where it applies).

        The fields are read with proton's C getters: the Message properties wrap each one (symbols,
        Data objects) and cost more than the decode itself.
        """
        message = self._message
        msg = message._msg
        code = pn_message_decode(msg, data)
        if code < 0:  # written with a marker and settled like any other: never a redelivery loop
            info = {"exchange": "", "routing_key": "", "redelivered": False, "delivery_tag": self._tag}
            broken = _Delivery(data, {}, info, self)
            broken.undecodable = f"not an AMQP 1.0 message (qpid-proton decode error {code})"
            return broken
        properties: dict[str, Any] = {}
        for key, getter in _TEXT_FIELDS:
            value = getter(msg)
            if value:
                properties[key] = _text(value)
        for key, value in (("message_id", message.id), ("correlation_id", message.correlation_id)):
            if value is not None:
                properties[key] = _text(value)
        created = pn_message_get_creation_time(msg)
        if created:
            properties["timestamp"] = created // 1000  # AMQP 1.0 counts milliseconds
        if pn_message_is_durable(msg):
            properties["delivery_mode"] = 2
        count = pn_message_get_delivery_count(msg)
        headers = _map(pn_message_properties(msg))
        if count:
            headers = {**(headers or {}), "x-delivery-count": count}  # what max_redeliveries reads
        if headers:
            properties["application_headers"] = headers
        annotations = _map(pn_message_annotations(msg)) or {}
        info = {
            "exchange": _text(annotations.get("x-opt-exchange-name") or ""),
            # RabbitMQ 3.x puts a 0-9-1 message's routing key in the subject; Qpid and Artemis annotate it.
            "routing_key": _text(annotations.get("x-opt-routing-key") or pn_message_get_subject(msg) or ""),
            "redelivered": bool(count) or not pn_message_is_first_acquirer(msg),
            "delivery_tag": self._tag,
        }
        body = Data(pn_message_body(msg))
        return _Delivery(_body_bytes(body.get_object() if body.next() else None), properties, info, self)


_TEXT_FIELDS = (
    ("content_type", pn_message_get_content_type), ("content_encoding", pn_message_get_content_encoding),
    ("reply_to", pn_message_get_reply_to), ("user_id", pn_message_get_user_id),
)  # fmt: skip


def _map(pointer: Any) -> dict[Any, Any] | None:
    """An AMQP map section (application properties, annotations) as a dict, None when absent."""
    data = Data(pointer)
    if not data.next():
        return None
    value = data.get_object()
    return value if isinstance(value, dict) else None


def _failure(condition: Any, where: str, binding: Any) -> Exception:
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


class _Delivery:
    """What the formats and the batch code read of a delivery (as of a py-amqp message)."""

    __slots__ = ("__dict__", "body", "channel", "delivery_info", "properties", "undecodable")

    def __init__(self, body: bytes, properties: dict[str, Any], info: dict[str, Any], channel: _Engine) -> None:
        self.body = body
        self.properties = properties
        self.delivery_info = info
        self.channel = channel
        self.undecodable: str | None = None


def _text(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else value.decode("utf-8", "replace")
        if isinstance(value, bytes)
        else str(value)
    )


def _body_bytes(body: Any) -> bytes:
    """The message body as bytes: data sections as they are, text as UTF-8, other AMQP values as JSON."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, memoryview | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")
    if body is None:
        return b""
    return json.dumps(body, default=str, ensure_ascii=False).encode("utf-8", "surrogateescape")


def _ssl_domain(tls: Any) -> SSLDomain:
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    if tls.ca_file:
        domain.set_trusted_ca_db(tls.ca_file)
    if tls.cert_file:
        domain.set_credentials(tls.cert_file, tls.key_file, None)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME if tls.verify else SSLDomain.ANONYMOUS_PEER)
    return domain


def probe_address(broker: Any, url: str, binding: Any) -> str | None:
    """--check --connect: log in to *url* and attach to *binding*'s address with no credit (taking nothing).

    Returns why that failed, in one line, or None.
    """
    probe = SimpleNamespace(broker=broker, binding=binding, _on_message=None)
    try:
        engine = _Engine(probe, url, credit=0)
    except OSError as exc:
        return f"cannot connect to {mask_url(url)}: {exc.strerror or exc}"
    try:
        deadline = time.monotonic() + broker.connect_timeout
        while not engine.attached():
            if time.monotonic() > deadline:
                return f"{mask_url(url)} did not attach address {binding.address!r} within {broker.connect_timeout:g} s"
            engine.pump(0.2)
    except (RefusedWithHint, ConnectionError, OSError, ProtonException) as exc:
        return f"{mask_url(url)}: {exc}"
    finally:
        engine.close(True)
    return None
