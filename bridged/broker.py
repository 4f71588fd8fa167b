"""Connections to the broker, shared by the daemon's consumers and the CLI tools.

One place decides the socket timeouts, TLS options, heartbeat and the name
the broker shows, and which errors are the broker refusing a request (a
config matter) rather than a connection blip.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import amqp
from amqp import exceptions as amqp_errors
from kombu.connection import Connection as KombuConnection

from bridged.config import BindingConfig, BrokerConfig
from bridged.configkit import TLSConfig
from bridged.secrets import mask_text, url_password

# With heartbeats off, a broker that hangs mid-declare is still given up after this.
IO_TIMEOUT_WITHOUT_HEARTBEAT = 60.0
HOSTNAME = socket.gethostname()


def io_timeout(broker: BrokerConfig) -> float:
    """Socket read/write timeout outside the drain loop (declares, acks, close)."""
    return max(2 * broker.heartbeat, 5.0) if broker.heartbeat else IO_TIMEOUT_WITHOUT_HEARTBEAT


class RefusedWithHint(Exception):
    """The broker refused a declaration; the message says which config key to change."""


# The broker refused what we asked for: retrying at once will not help.
REFUSED_ERRORS: tuple[type[BaseException], ...] = (
    RefusedWithHint,
    ssl.SSLCertVerificationError,  # wrong CA or host name: a config matter, not a blip
    amqp_errors.AccessRefused,
    amqp_errors.NotFound,
    amqp_errors.PreconditionFailed,
    amqp_errors.NotAllowed,
    amqp_errors.InvalidPath,
)
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    amqp_errors.AMQPError,
)


def tls_options(tls: TLSConfig, url: str) -> dict[str, Any]:
    """py-amqp's ssl options: verify chain and host name unless verify is false."""
    options: dict[str, Any] = {}
    if tls.cert_file:
        options.update(certfile=tls.cert_file, keyfile=tls.key_file)
    if not tls.verify:
        # no server_hostname key at all: kombu would fill one in and turn the host check back on
        options["cert_reqs"] = ssl.CERT_NONE
        return options
    options.update(cert_reqs=ssl.CERT_REQUIRED, server_hostname=tls.server_hostname or urlsplit(url).hostname)
    if tls.ca_file:
        options["ca_certs"] = tls.ca_file
    return options


def connect(broker: BrokerConfig, url: str, name: str) -> amqp.Connection:
    """One connection attempt to *url*, shown in the broker as `bridged <name>@<host>`.

    No hidden kombu retry loop: the caller's own backoff decides what follows a failure.
    """
    timeout = io_timeout(broker)
    # Named in the broker (rabbitmqctl list_connections name, the management UI).
    properties = {"connection_name": f"bridged {name}@{HOSTNAME}"}
    client = KombuConnection(  # type: ignore[no-untyped-call]
        url,
        heartbeat=broker.heartbeat,
        connect_timeout=broker.connect_timeout,
        transport_options={"read_timeout": timeout, "write_timeout": timeout, "client_properties": properties},
        ssl=tls_options(broker.tls, url) if url.startswith("amqps://") else False,
    )
    conn: amqp.Connection = client.transport.establish_connection()
    return conn


@contextmanager
def refusal_hint(hint: str) -> Iterator[None]:
    """Turn a 406 PRECONDITION_FAILED from the declaration inside into one that names the key to change."""
    try:
        yield
    except amqp_errors.PreconditionFailed as exc:
        raise RefusedWithHint(f"{hint} ({exc.reply_text or exc})") from exc


def declare_queue(channel: amqp.Channel, binding: BindingConfig) -> Any:
    """Declare *binding*'s queue as configured; a 406 (it exists with other settings) names the keys to change."""
    with refusal_hint(
        f"queue {binding.queue!r} exists with other settings: make bindings.{binding.name}.durable, auto_delete, "
        f"exclusive and queue_arguments match it (rabbitmqctl list_queues name arguments), or delete the queue"
    ):
        return channel.queue_declare(
            binding.queue, durable=binding.durable, exclusive=binding.exclusive, auto_delete=binding.auto_delete,
            arguments=dict(binding.queue_arguments) or None,
        )  # fmt: skip


def describe_error(exc: BaseException, passwords: tuple[str, ...]) -> str:
    """One line for a log or the terminal, with no password in it (py-amqp errors can quote the URL)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RefusedWithHint):
        return mask_text(text, passwords)
    return mask_text(f"{type(exc).__name__}: {text}", passwords)


def passwords_of(broker: BrokerConfig) -> tuple[str, ...]:
    """The passwords in *broker*'s URLs, to mask wherever an error might quote one."""
    return tuple(url_password(url) for url in broker.urls)


def first_connection(broker: BrokerConfig, name: str) -> tuple[amqp.Connection, str]:
    """Connect to the first of *broker*'s URLs that answers (a tool's one try); raises the last error.

    A refusal (wrong password, no such vhost) is raised at once: the next node would say the same.
    """
    error: BaseException | None = None
    for url in broker.urls:
        try:
            return connect(broker, url, name), url
        except REFUSED_ERRORS:
            raise
        except CONNECTION_ERRORS as exc:
            error = exc
    assert error is not None
    raise error


def exchange_exists(conn: amqp.Connection, exchange: str) -> bool:
    """A passive declare on a channel of its own (a 404 closes the channel); the type is not compared."""
    channel = conn.channel()
    try:
        channel.exchange_declare(exchange, "topic", passive=True)
    except amqp_errors.NotFound:
        return False
    channel.close()
    return True
