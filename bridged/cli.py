"""Command line: arguments and exit codes; the only place that prints to the user."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bridged import __version__
from bridged.config import ConfigError, describe, load_config
from bridged.log import LOG_FORMATS, LOG_LEVELS, configure

EXIT_INTERNAL = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridged",
        description="Bridge AMQP queues to log files, stdout and syslog; ack only what the sinks took.",
    )
    parser.add_argument("--config", "-c", metavar="PATH", help="YAML config file")
    parser.add_argument("--check", action="store_true", help="validate the config and exit (0 valid, 2 invalid)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                        help="bridged's own log on stderr: console, json, or auto (console on a TTY)")  # fmt: skip
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument("--version", action="version", version=f"bridged {__version__}")
    return parser


def _fail(message: str, code: int) -> int:
    print(f"bridged: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.config:
        return _fail("error: --config PATH is required (see bridged --help)", EXIT_CONFIG)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(f"config error in {args.config}: {exc}", EXIT_CONFIG)
    if args.check:
        print(describe(config))
        return 0
    configure(args.log_format, args.log_level)
    from bridged.supervisor import Supervisor  # after logging is configured

    try:
        return Supervisor(config).run()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for the operator
        return _fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
