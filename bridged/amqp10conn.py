"""One AMQP 1.0 connection on qpid-proton's engine, driven by our own socket loop: login, TLS, heartbeats, I/O.

No reactor and no event dispatch (the reactor's Python event machinery cost
more than everything else per message): the caller reads, looks at its link,
then flushes. The daemon's receiver (sources/amqp10.py) and `bridged publish`
(cli/publish10.py) each open one link on it.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from proton import SSL, Connection, Endpoint, ProtonException, SSLDomain, Transport

from bridged.broker import HOSTNAME, RefusedWithHint, io_timeout
from bridged.config import BrokerConfig
from bridged.configkit import TLSConfig

# A clean close waits this long for the broker's close-ok before dropping the socket.
CLOSE_TIMEOUT = 2.0

# Conditions that a retry will not change: say so, and retry at the slow pace.
REFUSED_CONDITIONS = {
    "amqp:unauthorized-access": "the broker refused the login (user or password) or access to the address",
    "amqp:not-found": "the address does not exist on the broker",
    "amqp:not-allowed": "the broker does not allow this link",
    "amqp:resource-locked": "the address is locked by another consumer",
}


class Amqp10Connection:
    """A socket, proton's transport and connection, and one session, opened (the handshake runs in read/flush)."""

    def __init__(self, broker: BrokerConfig, url: str, name: str) -> None:
        parts = urlsplit(url)
        tls = parts.scheme == "amqp10s"
        host = parts.hostname or "localhost"
        port = parts.port or (5671 if tls else 5672)
        self.sock = socket.create_connection((host, port), timeout=broker.connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN)
        self._timeout = io_timeout(broker)
        self.connection = Connection()
        self.connection.container = f"bridged {name}@{HOSTNAME}"
        self.connection.hostname = host
        if parts.username:
            self.connection.user = unquote(parts.username)
            self.connection.password = unquote(parts.password or "")
        self.transport = Transport()
        if broker.heartbeat:
            self.transport.idle_timeout = broker.heartbeat
        sasl = self.transport.sasl()
        sasl.allowed_mechs("PLAIN" if parts.username else "ANONYMOUS")
        sasl.allow_insecure_mechs = True  # PLAIN without TLS, as amqp:// sends its password
        if tls:
            ssl = SSL(self.transport, _ssl_domain(broker.tls))
            ssl.peer_hostname = broker.tls.server_hostname or host
        self.transport.bind(self.connection)
        self.connection.open()
        self.session = self.connection.session()
        self.session.open()

    @property
    def product(self) -> str:
        """The broker's name for itself (its open frame's `product` property), '' before the open or without."""
        return str((self.connection.remote_properties or {}).get("product", ""))

    def read(self, timeout: float) -> None:
        """Wait up to *timeout* for bytes and feed them to the engine (never more than it takes in)."""
        transport = self.transport
        capacity = transport.capacity()
        if capacity > 0 and self._poll.poll(int(timeout * 1000)):
            try:
                data = self.sock.recv(capacity)
            except (BlockingIOError, InterruptedError):
                data = None
            if data == b"":
                transport.close_tail()
                raise ConnectionError("the broker closed the connection")
            if data:
                transport.push(data)

    def flush(self) -> None:
        """Heartbeats out and the broker's idle timeout checked, then everything due sent."""
        self.transport.tick(time.monotonic())
        self.write()

    def write(self) -> None:
        transport = self.transport
        while True:
            pending = transport.pending()
            if pending <= 0:
                return
            data = transport.peek(pending) or b""
            self.sock.settimeout(self._timeout)
            sent = self.sock.send(data)
            transport.pop(sent)

    def keepalive(self) -> None:
        """From another thread during a long sink write: take in what arrived (it stays in the engine) and send
        our heartbeats, so the broker's idle timeout is met."""
        transport = self.transport
        capacity = transport.capacity()
        if capacity > 0 and self._poll.poll(0):
            data = self.sock.recv(capacity)
            if data:
                transport.push(data)
        self.flush()

    def check(self, link: Any, address: str) -> None:
        """Raise what the broker said: a refusal (retrying will not help) or a lost connection.

        *address* names where the link's address comes from, for a not-found (`bindings.b.address: 'q'`)."""
        # RabbitMQ 3.x ends only the session when its connection is closed from the broker side
        # (rabbitmqctl close_all_connections): the socket stays open, so every level is checked.
        for where, endpoint in (("link", link), ("session", self.session), ("connection", self.connection)):
            if endpoint.state & Endpoint.REMOTE_CLOSED:
                if endpoint.remote_condition is not None:
                    raise failure(endpoint.remote_condition, where, address)
                raise ConnectionError(f"the broker closed the {where}")
        if self.transport.condition is not None:
            raise failure(self.transport.condition, "transport", address)

    def close(self, clean: bool, link: Any = None) -> None:
        """Close (what is unsettled goes back to the broker) and drop the socket; *clean*: wait for the close-ok."""
        try:
            if clean:
                if link is not None:
                    link.close()
                self.connection.close()
                self.write()
                deadline = time.monotonic() + CLOSE_TIMEOUT
                while not self.connection.state & Endpoint.REMOTE_CLOSED and time.monotonic() < deadline:
                    if not self._poll.poll(100):
                        continue
                    data = self.sock.recv(4096)
                    if not data:
                        break
                    self.transport.push(data)
        except (OSError, ProtonException):
            pass
        finally:
            self.sock.close()


def failure(condition: Any, where: str, address: str) -> Exception:
    """A refusal that a retry will not change (named, with the key to change), or a lost connection."""
    name = getattr(condition, "name", None)
    description = getattr(condition, "description", None) or ""
    text = f"{where}: {name}: {description}".rstrip(": ")
    hint = REFUSED_CONDITIONS.get(name or "")
    if description.startswith("SSL Failure"):  # proton's word for a TLS handshake the peers could not agree on
        if "certificate verify failed" in description:
            hint = "TLS: the broker's certificate is untrusted or for another host (broker.tls.ca_file)"
        else:
            hint = "TLS failed (broker.tls: a client certificate, the protocol)"
    if hint is None:
        return ConnectionError(text)
    if name == "amqp:not-found" and where == "connection":
        # Qpid Broker-J picks the virtual host by the open frame's hostname: the URL's host, here. (RabbitMQ
        # 3.x ends the session for a missing queue: that is the address.)
        hint = "the broker has no virtual host for the URL's host name (broker.url)"
    elif name == "amqp:not-found":
        hint += f" ({address})"
    return RefusedWithHint(f"{hint} ({text})")


def _ssl_domain(tls: TLSConfig) -> SSLDomain:
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    if tls.ca_file:
        domain.set_trusted_ca_db(tls.ca_file)
    if tls.cert_file and tls.key_file:
        domain.set_credentials(tls.cert_file, tls.key_file, None)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME if tls.verify else SSLDomain.ANONYMOUS_PEER)
    return domain
