"""What every command shares: exit codes, the one-line error, and which broker to talk to."""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import dataclass

from bridged.config import BrokerConfig, Config, ConfigError, ReconnectConfig, broker_from_url, load_config
from bridged.exitcodes import EXIT_CONFIG as EXIT_CONFIG
from bridged.exitcodes import EXIT_INTERNAL as EXIT_INTERNAL
from bridged.exitcodes import EXIT_OK as EXIT_OK
from bridged.exitcodes import EXIT_UNDELIVERED as EXIT_UNDELIVERED

# The tools' default broker: the same as a config file's (RabbitMQ's out-of-the-box guest user).
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"


def fail(message: str, code: int) -> int:
    """Print `bridged: <message>` to stderr and return *code* (one line, never a traceback)."""
    print(f"bridged: {message}", file=sys.stderr)
    return code


class UsageError(Exception):
    """A mistake in the command line or the config it names: one line, exit 2."""


@dataclass(frozen=True)
class Target:
    """The broker a tool talks to, and the config file it came from (if any)."""

    broker: BrokerConfig
    reconnect: ReconnectConfig
    config: Config | None


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="take the broker (URLs, TLS, password_file) and reconnect settings from this config",
    )
    where.add_argument("--url", metavar="URL",
                       help=f"broker URL (default {DEFAULT_URL.replace('guest:guest', 'guest:****')})")  # fmt: skip


def resolve_target(args: argparse.Namespace, amqp10: bool = False) -> Target:
    """The broker named by --config or --url; raises UsageError with a one-line reason.

    *amqp10*: the command speaks AMQP 1.0 too (tail and publish read and write addresses)."""
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise UsageError(f"config error in {args.config}: {exc}") from None
        target = Target(config.broker, config.reconnect, config)
    else:
        try:
            target = Target(broker_from_url(args.url or DEFAULT_URL), ReconnectConfig(), None)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    if target.broker.amqp10 and not amqp10:
        raise UsageError("this command speaks AMQP 0-9-1 only: give an amqp:// URL")
    return target


def split_amqp10_url(text: str) -> tuple[str, str] | None:
    """`amqp10://host:port/ADDRESS` -> (the URL without its path, ADDRESS); None for anything else.

    As in Qpid's tools, the path less its first slash is the address: `amqp10://h/orders` reads `orders`,
    `amqp10://h//amq/queue/orders` RabbitMQ's `/amq/queue/orders`."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("amqp10", "amqp10s"):
        return None
    netloc, slash, address = rest.partition("/")
    if not slash or not address:
        raise UsageError(f"{scheme}://{netloc.rpartition('@')[2]}: name the address after the host "
                         f"({scheme}://HOST:PORT/ADDRESS)")  # fmt: skip
    return f"{scheme}://{netloc}", address


def key_value(text: str) -> tuple[str, str]:
    """argparse type for name=value options."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    return name, value


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): `bridged tail: error: ... (see --help)`, exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value
