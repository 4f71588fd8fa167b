"""`--check --connect`: what a valid config can still meet at run time, found before systemd is told READY.

A wrong password, an exchange no service has declared, a queue that exists
with other arguments and a sink path this user cannot write all fail only
once the daemon runs. This logs in with every broker URL, checks each
binding's exchanges (passively) and queue, and probes each sink, changing
nothing: a queue is declared only if it already exists, with the arguments
bridged would use, so a mismatch shows as the broker's own refusal.
"""

from __future__ import annotations

from collections.abc import Iterator

import amqp
from amqp import exceptions as amqp_errors

from bridged.broker import (
    CONNECTION_ERRORS,
    REFUSED_ERRORS,
    connect,
    declare_queue,
    describe_error,
    exchange_exists,
    passwords_of,
)  # fmt: skip
from bridged.config import BindingConfig, Config
from bridged.secrets import mask_url
from bridged.sinks import build_sink


def problems(config: Config) -> list[str]:
    """One line per problem found (empty: the daemon would start cleanly)."""
    found: list[str] = []
    if config.broker.amqp10:
        found.extend(_amqp10_problems(config))
        found.extend(_sink_problems(config))
        return found
    conn = None
    for index, url in enumerate(config.broker.urls):
        where = "broker.url" if len(config.broker.urls) == 1 else f"broker.url[{index}]"
        problem, opened = _log_in(config, url)
        if problem is not None:
            found.append(f"{where}: {problem}")
        elif conn is None:
            conn = opened  # the first that works checks the bindings
        elif opened is not None:
            opened.collect()
    if conn is not None:
        try:
            for binding in config.bindings.values():
                found.extend(_binding_problems(conn, binding))
        finally:
            conn.collect()
    found.extend(_sink_problems(config))
    return found


def _sink_problems(config: Config) -> Iterator[str]:
    for name, sink_config in config.sinks.items():
        sink = build_sink(sink_config)
        problem = sink.probe()
        sink.close()
        if problem is not None:
            yield f"sinks.{name}: {problem}"


def _amqp10_problems(config: Config) -> Iterator[str]:
    """Each URL, each binding's address: logged in and attached with no credit (nothing taken), then closed."""
    from bridged.sources.amqp10 import probe_address

    for index, url in enumerate(config.broker.urls):
        where = "broker.url" if len(config.broker.urls) == 1 else f"broker.url[{index}]"
        for binding in config.bindings.values():
            problem = probe_address(config.broker, url, binding)
            if problem is not None:
                key = f"bindings.{binding.name}.address" if "amqp:not-found" in problem else where
                yield f"{key}: {problem}"


def _log_in(config: Config, url: str) -> tuple[str | None, amqp.Connection | None]:
    try:
        return None, connect(config.broker, url, "check")
    except (amqp_errors.AccessRefused, amqp_errors.NotAllowed) as exc:
        reason = describe_error(exc, passwords_of(config.broker))
        return f"{mask_url(url)} refused the login (user, password or vhost): {reason}", None
    except (*REFUSED_ERRORS, *CONNECTION_ERRORS) as exc:
        return f"cannot connect to {mask_url(url)}: {describe_error(exc, passwords_of(config.broker))}", None


def _binding_problems(conn: amqp.Connection, binding: BindingConfig) -> Iterator[str]:
    where = f"bindings.{binding.name}"
    for source in binding.sources:
        if source.exchange.startswith("amq.") or binding.exchange_declare == "passive":
            if not exchange_exists(conn, source.exchange):
                key = source.where if ".exchanges." in source.where else f"{source.where}.exchange"
                yield (f"{key}: exchange {source.exchange!r} does not exist: bridged waits for its service to "
                       "declare it (or set exchange_declare: create for an exchange bridged owns)")  # fmt: skip
    channel = conn.channel()
    try:
        channel.queue_declare(binding.queue, passive=True)
    except amqp_errors.NotFound:
        return  # bridged declares it on its first connect
    except amqp_errors.ResourceLocked:
        yield f"{where}.queue: queue {binding.queue!r} is exclusive to another connection"
        return
    channel = conn.channel()
    try:
        declare_queue(channel, binding)  # it exists: the same arguments change nothing, others are refused
        channel.close()
    except REFUSED_ERRORS as exc:
        yield f"{where}.queue: {describe_error(exc, ())}"
    except amqp_errors.ResourceLocked:
        yield f"{where}.queue: queue {binding.queue!r} is exclusive to another connection"
