"""`bridged publish EXCHANGE ROUTING_KEY [BODY]`: send test messages, with confirms, and say what the broker took.

`bridged publish amqp10://HOST/ADDRESS [BODY]` sends to an AMQP 1.0 address instead (publish10.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from amqp import exceptions as amqp_errors

from bridged.broker import CONNECTION_ERRORS, HOSTNAME, describe_error, first_connection, io_timeout, passwords_of
from bridged.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_UNDELIVERED,
    Parser,
    UsageError,
    add_broker_options,
    fail,
    key_value,
    positive_float,
    positive_int,
    resolve_target,
    split_amqp10_url,
)  # fmt: skip
from bridged.config import BrokerConfig
from bridged.publisher import OSLO_PRIORITIES, Publisher, PublishResult, oslo_notification, oslo_priority
from bridged.secrets import mask_url

# AMQP basic properties a user may set, and how each value is read from text.
_TEXT_PROPERTIES = ("content_type", "content_encoding", "message_id", "correlation_id", "reply_to", "type",
                    "user_id", "app_id")  # fmt: skip
# A lost connection, a channel error (the exchange deleted meanwhile), or no confirm in time.
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TimeoutError)
PROPERTIES = (*_TEXT_PROPERTIES, "expiration", "priority", "delivery_mode", "timestamp")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bridged publish",
        description="Publish test messages with publisher confirms. Prints how many the broker confirmed; exits 0 "
        "only when every message was confirmed and taken by at least one queue (1 otherwise, 2 on a usage error).",
    )
    add_broker_options(parser)
    parser.add_argument(
        "exchange",
        metavar="EXCHANGE",
        help="exchange to publish to ('' is the default exchange: the routing key names a queue); or "
        "amqp10://HOST:PORT/ADDRESS, an AMQP 1.0 address (then no ROUTING_KEY: BODY follows)",
    )
    parser.add_argument(
        "routing_key", metavar="ROUTING_KEY", nargs="?", help="the routing key (with exchange '': the queue's name)"
    )
    parser.add_argument(
        "body", metavar="BODY", nargs="?", help="the message body; without it, one message per line of stdin"
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        type=key_value,
        default=[],
        metavar="NAME=VALUE",
        help="an application header (text value); repeat for more",
    )
    parser.add_argument(
        "--property",
        action="append",
        type=key_value,
        default=[],
        metavar="NAME=VALUE",
        help=f"an AMQP property: {', '.join(PROPERTIES)}; repeat for more",
    )
    parser.add_argument(
        "--persistent",
        action="store_true",
        help="delivery_mode 2: a durable queue keeps the message over a broker restart",
    )
    parser.add_argument(
        "--subject", metavar="TEXT", help="AMQP 1.0: the message's subject (what RabbitMQ reads as a routing key)"
    )
    parser.add_argument(
        "--count", type=positive_int, metavar="N", help="send BODY N times (default once); with stdin, at most N lines"
    )
    parser.add_argument("--rate", type=positive_float, metavar="R", help="at most R messages per second")
    oslo = parser.add_argument_group("oslo.messaging notifications")
    oslo.add_argument(
        "--oslo",
        metavar="EVENT_TYPE",
        help="wrap each body (JSON, else text) as the payload of an oslo.messaging 2.0 notification",
    )
    oslo.add_argument(
        "--priority",
        type=str.upper,
        choices=OSLO_PRIORITIES,
        help="the notification's priority (default: from ROUTING_KEY, e.g. notifications.error)",
    )
    oslo.add_argument(
        "--publisher-id", metavar="ID", help=f"the notification's publisher_id (default bridged.{HOSTNAME})"
    )
    return parser  # fmt: skip


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.oslo is None and (args.priority or args.publisher_id):
        parser.error("--priority and --publisher-id go with --oslo EVENT_TYPE")
    try:
        in_url = split_amqp10_url(args.exchange)
    except UsageError as exc:
        return fail(str(exc), EXIT_CONFIG)
    if in_url is not None:
        if args.url or args.config:
            parser.error("give the broker once: in the amqp10:// URL, or with --url or --config")
        if args.body is not None:
            parser.error("an AMQP 1.0 address takes no ROUTING_KEY: amqp10://HOST/ADDRESS [BODY] (--subject sets one)")
        args.url, args.exchange, args.body, args.routing_key = *in_url, args.routing_key, None
    try:
        properties = message_properties(args.property, args.header, args.persistent, oslo=args.oslo is not None)
        target = resolve_target(args, amqp10=True)
        if target.broker.amqp10 and in_url is None:  # --url amqp10://HOST or --config: ADDRESS [BODY]
            if args.body is not None:
                raise UsageError("an AMQP 1.0 address takes no ROUTING_KEY: ADDRESS [BODY] (--subject sets one)")
            args.body, args.routing_key = args.routing_key, None
        if not target.broker.amqp10:
            if args.routing_key is None:
                parser.error("the following arguments are required: ROUTING_KEY")
            if args.subject is not None:
                raise UsageError("--subject is for AMQP 1.0 addresses (on AMQP 0-9-1 the routing key says it)")
        else:
            from bridged.cli.publish10 import amqp10_message

            amqp10_message(b"", properties, args.subject)  # an unknown --property: refused before anything is sent
    except UsageError as exc:
        return fail(str(exc), EXIT_CONFIG)
    bodies = _bodies(args)
    if args.oslo is not None:
        priority = args.priority or oslo_priority(args.routing_key or args.subject or "")
        publisher_id = args.publisher_id or f"bridged.{HOSTNAME}"
        bodies = (oslo_notification(args.oslo, _payload(body), priority, publisher_id) for body in bodies)
    if target.broker.amqp10:
        from bridged.cli.publish10 import amqp10_message, publish

        messages = (amqp10_message(body, properties, args.subject) for body in _paced(bodies, args.rate))
        return publish(target.broker, args.exchange, messages)
    return _publish(target.broker, args.exchange, args.routing_key, bodies, properties, args.rate)


def _paced(bodies: Iterator[bytes], rate: float | None) -> Iterator[bytes]:
    """*bodies*, at most *rate* a second."""
    started = time.monotonic()
    for index, body in enumerate(bodies):
        if rate is not None:
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
        yield body


def _publish(broker: BrokerConfig, exchange: str, routing_key: str, bodies: Iterator[bytes], properties: dict[str, Any],
             rate: float | None) -> int:  # fmt: skip
    passwords = passwords_of(broker)
    try:
        conn, url = first_connection(broker, "publish")
    except CONNECTION_ERRORS as exc:
        return fail(f"cannot connect to {', '.join(mask_url(u) for u in broker.urls)}: "
                    f"{describe_error(exc, passwords)}", EXIT_CONFIG)  # fmt: skip
    publisher: Publisher | None = None
    try:
        publisher = Publisher(conn, confirm_timeout=io_timeout(broker))
        try:
            publisher.check_exchange(exchange)
        except amqp_errors.NotFound:
            return fail(f"exchange {exchange!r} does not exist on {mask_url(url)}", EXIT_CONFIG)
        started = time.monotonic()
        for index, body in enumerate(bodies):
            if rate is not None:
                publisher.wait_until(started + index / rate)
            publisher.publish(exchange, routing_key, body, properties)
        result = publisher.settle(io_timeout(broker))
    except KeyboardInterrupt:
        result = publisher.settle(io_timeout(broker)) if publisher is not None else PublishResult()
        print(summary(result), flush=True)
        return 130
    except PUBLISH_ERRORS as exc:
        if publisher is not None:
            print(summary(publisher.result), flush=True)
        return fail(f"publishing stopped: {describe_error(exc, passwords)}", EXIT_UNDELIVERED)
    finally:
        conn.collect()
    print(summary(result), flush=True)
    return EXIT_OK if result.complete else EXIT_UNDELIVERED


def summary(result: PublishResult) -> str:
    """`10 sent, 10 confirmed`, plus what went wrong: nacked, not confirmed, returned unroutable."""
    parts = [f"{result.sent} sent", f"{result.confirmed} confirmed"]
    if result.nacked:
        parts.append(f"{result.nacked} nacked by the broker")
    if result.unconfirmed:
        parts.append(f"{result.unconfirmed} not confirmed")
    if result.returned:
        parts.append(f"{result.returned} unroutable (no queue is bound for this routing key: returned)")
    return ", ".join(parts)


def message_properties(pairs: list[tuple[str, str]], headers: list[tuple[str, str]], persistent: bool,
                       oslo: bool) -> dict[str, Any]:  # fmt: skip
    """py-amqp message properties from --property and -H pairs; raises UsageError naming the bad one."""
    properties: dict[str, Any] = {}
    if oslo:  # what oslo.messaging's rabbit driver sends
        properties.update(content_type="application/json", content_encoding="utf-8")
    if persistent:
        properties["delivery_mode"] = 2
    for name, value in pairs:
        properties[name] = _property(name, value)
    if headers:
        properties["application_headers"] = dict(headers)
    return properties


def _property(name: str, value: str) -> Any:
    where = f"--property {name}"
    if name in _TEXT_PROPERTIES:
        return value
    if name == "expiration":  # RabbitMQ reads it as milliseconds, written as text
        if not value.isdigit():
            raise UsageError(f"{where}: expected milliseconds (digits), got {value!r}")
        return value
    if name in ("priority", "delivery_mode"):
        allowed = range(0, 256) if name == "priority" else range(1, 3)
        if not value.isdigit() or int(value) not in allowed:
            raise UsageError(f"{where}: expected a whole number from {allowed.start} to {allowed.stop - 1}, "
                             f"got {value!r}")  # fmt: skip
        return int(value)
    if name == "timestamp":
        try:
            seconds = int(value) if value.isdigit() else int(datetime.fromisoformat(value).timestamp())
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"{where}: expected seconds since 1970 or an ISO 8601 time, got {value!r}") from None
        if not 0 <= seconds < 1 << 64:  # an AMQP timestamp is 64-bit unsigned seconds
            raise UsageError(f"{where}: {value!r} is out of range")
        return seconds
    raise UsageError(f"--property: unknown property {name!r}; one of {', '.join(PROPERTIES)} (or -H for a header)")


def _bodies(args: argparse.Namespace) -> Iterator[bytes]:
    """BODY --count times, or stdin's lines (without their line ends), at most --count."""
    if args.body is not None:
        body = os.fsencode(args.body)
        for _ in range(args.count or 1):
            yield body
        return
    for sent, line in enumerate(sys.stdin.buffer):
        if args.count is not None and sent >= args.count:
            return
        yield line.removesuffix(b"\n").removesuffix(b"\r")


def _payload(body: bytes) -> Any:
    """A notification payload: the body's JSON value, or its text."""
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
