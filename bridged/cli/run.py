"""`bridged --config FILE`: run the daemon (foreground, --daemon) or --check its config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridged import __version__
from bridged.cli.common import EXIT_CONFIG, EXIT_INTERNAL, Parser, fail
from bridged.config import Config, ConfigError, describe, load_config, plural
from bridged.config import warnings as config_warnings
from bridged.log import LOG_FORMATS, LOG_LEVELS, configure, get_logger

if TYPE_CHECKING:
    from bridged.daemon import Starter


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bridged",
        description="Bridge AMQP queues to log files, stdout and syslog; ack only what the sinks took.",
    )
    parser.add_argument("--config", "-c", metavar="PATH", help="YAML config file")
    parser.add_argument("--check", action="store_true", help="validate the config and exit (0 valid, 2 invalid)")
    parser.add_argument(
        "--connect",
        action="store_true",
        help="with --check: also log in with every broker URL, check each binding's exchanges and queue, and "
        "probe each sink (as this user), changing nothing",
    )
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="detach (SysV style); without it bridged never forks, as systemd and docker need",
    )
    parser.add_argument("--pidfile", metavar="PATH", help="write and lock a pidfile; a live holder refuses a start")
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="bridged's own log to this file instead of stderr (with --daemon: default syslog)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="bridged's own log: console, json, or auto (console on a TTY)",
    )
    parser.add_argument(
        "--health-file",
        metavar="PATH",
        help="touch PATH every second while no binding is wedged (for a liveness check that reads a file's age)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="bridged's own log: debug adds each declaration and batch (default info)",
    )
    parser.add_argument("--version", action="version", version=f"bridged {__version__}")
    parser.epilog = (
        "tools: bridged tail EXCHANGE [KEY ...] (watch what flows), bridged publish EXCHANGE KEY [BODY] "
        "(send test messages); see bridged tail --help"
    )
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.config:
        return fail("error: --config PATH is required (see bridged --help)", EXIT_CONFIG)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(f"config error in {args.config}: {exc}", EXIT_CONFIG)
    if args.connect and not args.check:
        return fail("error: --connect goes with --check", EXIT_CONFIG)
    if args.check:
        return _check(config, args.connect)
    from bridged.sources import unavailable

    missing = unavailable(config.broker)
    if missing is not None:
        return fail(missing, EXIT_CONFIG)
    from bridged.daemon import (
        Pidfile,
        PidfileError,
        Starter,
        check_own_log,
        daemonize,
        log_stream_for_daemon,
        open_log_file,
    )

    problem = check_own_log(args.log_file, args.daemon)
    if problem:
        return fail(problem, EXIT_INTERNAL)
    pidfile = Pidfile(args.pidfile) if args.pidfile else None
    try:
        if args.daemon:
            return daemonize(pidfile, lambda starter: _serve(config, args, log_stream_for_daemon(args.log_file),
                                                              starter), fail)  # fmt: skip
        if pidfile is not None:
            pidfile.acquire()
        log_stream = open_log_file(args.log_file) if args.log_file else None
        try:
            started = pidfile.write_pid if pidfile is not None else lambda: None
            return _serve(config, args, log_stream, Starter(started, fail))
        finally:
            if pidfile is not None:
                pidfile.release()
    except PidfileError as exc:
        return fail(str(exc), EXIT_INTERNAL)
    except OSError as exc:
        return fail(f"cannot start: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), EXIT_INTERNAL)


def _check(config: Config, connect: bool) -> int:
    """--check [--connect]: the summary line and warnings; with --connect, one line per problem, exit 2 if any."""
    from bridged.sources import unavailable

    missing = unavailable(config.broker)
    if missing is not None:
        return fail(f"{config.path}: {missing}", EXIT_CONFIG)
    for warning in config_warnings(config):
        print(f"bridged: warning: {warning}", file=sys.stderr)
    if not connect:
        print(describe(config))
        return 0
    from bridged.preflight import findings

    found = findings(config)
    for finding in found:
        kind = "warning: " if finding.warning else ""
        print(f"bridged: {kind}{config.path}: {finding.text}", file=sys.stderr)
    if any(not finding.warning for finding in found):
        return EXIT_CONFIG
    print(f"{describe(config)}; connected: {plural(len(config.broker.urls), 'broker URL')}, "
          f"{plural(len(config.bindings), 'binding')} and {plural(len(config.sinks), 'sink')} checked")  # fmt: skip
    return 0


def _serve(config: Config, args: argparse.Namespace, log_stream: object, starter: Starter) -> int:
    """Run the supervisor; *starter* is told it runs once signals are handled and nothing can fail at start any
    more (pidfile, daemon starter), or why it cannot start (one line)."""
    configure(args.log_format, args.log_level, log_stream)  # type: ignore[arg-type]
    from bridged.supervisor import StartError, Supervisor  # after logging is configured

    try:
        supervisor = Supervisor(config, health_file=args.health_file)
        try:
            supervisor.prepare()
        except StartError as exc:
            return starter.failed(f"cannot start: {exc}", EXIT_INTERNAL)
        starter.ready()
        return supervisor.run()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for the operator
        get_logger().exception("internal_error")  # the traceback goes to bridged's log only
        return fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
