"""`bridged tail EXCHANGE [ROUTING_KEY ...]`: print what flows through an exchange, as bridged would log it.

It runs the daemon's own machinery (supervisor, consumer, formats, stdout
sink) on one binding whose queue is its own: exclusive, auto-delete and
bounded, so it takes a copy of the traffic, never messages from anyone's
queue, and leaves nothing behind, even after kill -9.

`bridged tail amqp10://HOST/ADDRESS` reads an AMQP 1.0 queue (Qpid's
`drain`): browsing it (a link with distribution-mode copy: the messages stay
for the queue's consumers) where the broker can, refused where it cannot;
`--consume` takes them instead, one settled per line printed, so nothing is
taken that was not printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from bridged.broker import (
    CONNECTION_ERRORS,
    HOSTNAME,
    REFUSED_ERRORS,
    describe_error,
    exchange_exists,
    first_connection,
    passwords_of,
)  # fmt: skip
from bridged.cli.common import (
    EXIT_CONFIG,
    Parser,
    Target,
    UsageError,
    add_broker_options,
    fail,
    positive_float,
    positive_int,
    resolve_target,
    split_amqp10_url,
)
from bridged.config import (
    BindingConfig,
    Config,
    ConfigError,
    MetricsConfig,
    Source,
    check_format,
)  # fmt: skip
from bridged.log import LOG_LEVELS, configure
from bridged.redact import DEFAULT_REDACT_KEYS
from bridged.secrets import mask_url
from bridged.sinks import LineMeta, SinkClosed, SinkConfig, SinkDone, StdoutSink

# Deliveries in flight to a terminal: enough for a burst, few to print twice after a reconnect.
TAIL_PREFETCH = 100
# The tail queue's bound: a tail that falls this far behind (a paused terminal)
# loses the oldest messages rather than growing in the broker's memory.
TAIL_QUEUE_MAX_LENGTH = 100_000
DEFAULT_FORMAT = "json"
# Every AMQP 0-9-1 broker has these, with these types (AMQP itself cannot tell an exchange's type).
BUILT_IN_EXCHANGES = {"": "direct", "amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic",
                      "amq.headers": "headers", "amq.match": "headers"}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bridged tail",
        description="Print the messages that flow through an exchange, formatted as bridged would log them. It "
        "reads a copy through a temporary queue of its own, so it never takes messages from another consumer. "
        "Exits 0 after --count messages, after --timeout seconds without one, or on Ctrl-C.",
    )
    add_broker_options(parser)
    parser.add_argument(
        "exchange",
        metavar="EXCHANGE",
        nargs="?",
        help="the exchange to watch (it must exist: tail never creates one); or amqp10://HOST:PORT/ADDRESS, an AMQP "
        "1.0 queue to browse",
    )
    parser.add_argument(
        "routing_keys",
        metavar="ROUTING_KEY",
        nargs="*",
        help="binding keys (default '#': everything on a topic or fanout exchange; a direct exchange needs its keys)",
    )
    parser.add_argument(
        "--binding",
        metavar="NAME",
        help="watch what this binding of --config receives: its exchanges, keys, format and filter",
    )
    parser.add_argument(
        "--format",
        "-f",
        metavar="FORMAT",
        help=f"raw, json, oslo or a template such as '{{routing_key}} {{event_type}}' "
        f"(default: the binding's, else {DEFAULT_FORMAT})",
    )
    parser.add_argument("--count", "-n", type=positive_int, metavar="N", help="exit after N messages")
    parser.add_argument(
        "--timeout", type=positive_float, metavar="SECONDS", help="exit after this long without a message"
    )
    parser.add_argument(
        "--consume",
        action="store_true",
        help="AMQP 1.0: take the messages from the address (each settled once printed) instead of browsing them; "
        "for a broker that cannot browse. Never needed on AMQP 0-9-1 (tail reads a copy there)",
    )
    parser.add_argument(
        "--no-redact",
        action="store_true",
        help="show tokens and passwords in json, oslo and template lines (masked by default)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="bridged's own messages on stderr (default warning: reconnects, a missing exchange)",
    )
    return parser  # fmt: skip


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        in_url = split_amqp10_url(args.exchange) if args.exchange else None
    except UsageError as exc:
        return fail(str(exc), EXIT_CONFIG)
    if in_url is not None:
        if args.url or args.config:
            parser.error("give the broker once: in the amqp10:// URL, or with --url or --config")
        args.url, args.exchange = in_url
    if args.binding and not args.config:
        parser.error("--binding NAME takes the binding from --config FILE")
    if args.binding and (args.exchange or args.routing_keys):
        parser.error("give EXCHANGE [ROUTING_KEY ...] or --binding NAME, not both")
    if not args.binding and not args.exchange:
        parser.error("name the EXCHANGE to watch (or --config FILE --binding NAME)")
    try:
        target = resolve_target(args, amqp10=True)
        if target.broker.amqp10:
            if args.routing_keys:
                raise UsageError("an AMQP 1.0 address has no routing keys: give the address alone")
            binding = address_binding(args, target)
        elif args.consume:
            raise UsageError("--consume is for AMQP 1.0 addresses (on AMQP 0-9-1, tail reads a copy of the "
                             "exchange's traffic through a queue of its own)")  # fmt: skip
        else:
            binding = tail_binding(args, target)
    except UsageError as exc:
        return fail(str(exc), EXIT_CONFIG)
    warnings: list[str] = []
    if target.broker.amqp10:
        problem = _check_address(target, binding)
    else:
        problem, warnings = _check_exchanges(target, binding, keys_given=bool(args.routing_keys))
    if problem:
        return fail(problem, EXIT_CONFIG)
    for warning in warnings:
        print(f"bridged: warning: {warning}", file=sys.stderr)
    configure("console", args.log_level)
    from bridged.supervisor import Supervisor  # after logging is configured

    config = Config(
        path=args.config or "<bridged tail>",
        broker=target.broker,
        reconnect=target.reconnect,
        sinks={"stdout": SinkConfig("stdout", "stdout")},
        bindings={binding.name: binding},
        metrics=MetricsConfig(listen=None, stats_interval=0),
    )
    output = LimitedOutput(args.count, settles_what_it_prints=args.consume)
    supervisor = Supervisor(config, sinks={"stdout": output}, until=output.idle_for(args.timeout))
    output.on_done = supervisor.request_stop
    return supervisor.run()


def _check_exchanges(target: Target, binding: BindingConfig, keys_given: bool) -> tuple[str | None, list[str]]:
    """(a problem, warnings): a refused login or a missing exchange is found at once (a typo should not wait
    forever); a wildcard key on a direct exchange, which would show nothing, is warned about.

    A broker that cannot be reached is no such problem: tail then retries like the daemon.
    """
    try:
        conn, url = first_connection(target.broker, "tail")
    except REFUSED_ERRORS as exc:
        return f"the broker refused the login: {describe_error(exc, passwords_of(target.broker))}", []
    except CONNECTION_ERRORS:
        return None, []
    try:
        missing = [s.exchange for s in binding.sources if not exchange_exists(conn, s.exchange)]
    except CONNECTION_ERRORS:
        return None, []
    finally:
        conn.collect()
    if missing:
        names = ", ".join(repr(name) for name in missing)
        return f"exchange {names} does not exist on {mask_url(url)} (tail never creates one)", []
    warnings = []
    for source in binding.sources:
        patterns = [key for key in source.routing_keys if "#" in key or "*" in key]
        if source.keys_where and patterns and exchange_type(url, source.exchange) == "direct":
            given = f"{patterns[0]!r}" if keys_given else f"none given, and the default {patterns[0]!r}"
            warnings.append(f"{source.keys_where}: {given} matches nothing on direct exchange {source.exchange!r} "
                            "(it matches keys exactly, without wildcards): name the routing keys to watch")  # fmt: skip
    return None, warnings


def _check_address(target: Target, binding: BindingConfig) -> str | None:
    """A refused login, a missing address or a broker that cannot browse, found at once (nothing taken: the
    link gets no credit); an unreachable broker is no such problem (tail retries like the daemon)."""
    from bridged.broker import RefusedWithHint
    from bridged.sources.amqp10 import attach_without_credit

    url = target.broker.urls[0]
    try:
        attach_without_credit(target.broker, url, binding)
    except RefusedWithHint as exc:
        return f"{mask_url(url)}: {describe_error(exc, passwords_of(target.broker))}"
    except OSError:
        return None
    return None


def address_binding(args: argparse.Namespace, target: Target) -> BindingConfig:
    """A binding on an AMQP 1.0 address: browsing it, or with --consume taking one message per line printed."""
    base = tail_binding(args, target)
    if args.binding:
        assert target.config is not None
        address = target.config.bindings[args.binding].address or ""
    else:
        address = args.exchange
    return replace(
        base, sources=(), address=address, queue=address, browse=not args.consume, durable=True, auto_delete=False,
        exclusive=False, queue_arguments={},
        # --consume: one message in hand at a time (credit 1), settled once printed; the rest stays at the broker
        prefetch=1 if args.consume else base.prefetch, batch_size=1 if args.consume else base.batch_size,
    )  # fmt: skip


def exchange_type(url: str, exchange: str) -> str | None:
    """An exchange's type, where it can be known: a built-in one's, or the management API's (else None)."""
    if exchange in BUILT_IN_EXCHANGES:
        return BUILT_IN_EXCHANGES[exchange]
    from bridged.policies import ApiUnavailable, ManagementApi

    try:
        return ManagementApi(url).exchange_type(exchange)
    except ApiUnavailable:
        return None


def tail_binding(args: argparse.Namespace, target: Target) -> BindingConfig:
    """A binding on a private queue: exclusive (deleted with its connection), auto-delete, bounded."""
    if args.binding:
        assert target.config is not None
        chosen = target.config.bindings.get(args.binding)
        if chosen is None:
            names = ", ".join(sorted(target.config.bindings))
            raise UsageError(f"--binding {args.binding!r} is not a binding of {args.config} (it has: {names})")
        sources, fmt, redact = chosen.sources, chosen.format, chosen.redact
        keep, drop = chosen.keep, chosen.drop
    else:
        keys = tuple(args.routing_keys) or ("#",)
        sources = (Source(args.exchange or "", "topic", keys, "EXCHANGE", keys_where="ROUTING_KEY"),)
        fmt, redact, keep, drop = DEFAULT_FORMAT, DEFAULT_REDACT_KEYS, {}, {}
    if args.format is not None:
        try:
            fmt = check_format(args.format, "--format")
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    return BindingConfig(
        name=f"tail {args.binding}" if args.binding else "tail",
        sources=sources,
        exchange_durable=False,
        exchange_declare="passive",  # never create (or alter) an exchange
        queue=f"bridged.tail.{HOSTNAME}.{os.getpid()}.{secrets.token_hex(3)}",
        durable=False,
        auto_delete=True,
        exclusive=True,
        queue_arguments={"x-max-length": TAIL_QUEUE_MAX_LENGTH},
        prefetch=TAIL_PREFETCH,
        batch_size=TAIL_PREFETCH // 4,
        batch_delay=0.02,
        sinks=("stdout",),
        format=fmt,
        sink_formats=(fmt,),
        redact=None if args.no_redact else redact,
        keep=keep,
        drop=drop,
    )


class LimitedOutput:
    """stdout that takes at most *count* lines, then asks to stop; a closed reader (`| head`) ends it quietly.

    *settles_what_it_prints* (`--consume`): lines it does not print are refused (SinkDone), never taken, so
    they stay unsettled at the broker; otherwise (copies) they are dropped."""

    name = "stdout"
    wants_meta = False
    progress = 0

    def __init__(self, count: int | None, settles_what_it_prints: bool = False) -> None:
        self._stdout = StdoutSink("stdout")
        self._strict = settles_what_it_prints
        self._left = count
        self._lock = threading.Lock()
        self._closed = False
        self.last_line = time.monotonic()  # when a line was last written (or the start)
        self.on_done: Callable[[], None] | None = None  # set to the supervisor's request_stop

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        with self._lock:
            if self._strict and (self._closed or (self._left is not None and len(lines) > self._left)):
                raise SinkDone("has printed its count")  # not printed, so not taken: left unsettled
            if self._closed:
                return  # after the count, or once the reader left: copies, dropped
            take = lines if self._left is None else lines[: self._left]
            try:
                self._stdout.write(take)
            except SinkClosed:
                self._done()
                if self._strict:
                    raise SinkDone("the reader went away") from None
                return
            self.last_line = time.monotonic()
            if self._left is not None:
                self._left -= len(take)
                if self._left == 0:
                    self._done()

    def _done(self) -> None:
        self._closed = True
        if self.on_done is not None:
            self.on_done()

    def idle_for(self, seconds: float | None) -> Callable[[], bool] | None:
        """A check for the supervisor: True once no line came for *seconds* (None: never)."""
        if seconds is None:
            return None
        return lambda: time.monotonic() - self.last_line >= seconds

    def probe(self) -> str | None:
        return None

    def reopen(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass
