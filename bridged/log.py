"""bridged's own log: structlog to stderr, configured once (console on a TTY, JSON otherwise)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Protocol

import structlog

LOG_FORMATS = ("auto", "console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class LogStream(Protocol):
    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...


class _NeverFails:
    """bridged's own log must never take the daemon down: a write it cannot do (disk full,
    a file size limit, a closed stderr) loses that log line, not the messages in flight."""

    def __init__(self, stream: LogStream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return 0

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return self._stream.isatty()


class _ToStructlog(logging.Handler):
    """Routes kombu/py-amqp stdlib records into the same stream and format."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger(record.name).log(record.levelno, "library_log", message=record.getMessage())
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)


_stream: LogStream | None = None

# What the console's `stats` line always shows per binding; other counters only when not zero.
STATS_SHOWN = ("received", "acked", "backlog", "unacked")


def readable_stats(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Console only: the `stats` line's per-binding counts as `name[key=value ...]`, not a Python dict.

    JSON keeps every counter of every binding, always, for the machines that read it.
    """
    bindings = event.get("bindings")
    if event.get("event") != "stats" or not isinstance(bindings, dict):
        return event
    parts = []
    for binding, counts in bindings.items():
        shown = [f"{key}={'-' if counts.get(key) is None else counts[key]}" for key in STATS_SHOWN]
        shown += [f"{key}={value}" for key, value in counts.items() if key not in STATS_SHOWN and value]
        parts.append(f"{binding}[{' '.join(shown)}]")
    event["bindings"] = " ".join(parts)
    return event


def reopen() -> None:
    """SIGHUP: reopen bridged's own log file, if it is one (logrotate renamed it)."""
    reopen_stream = getattr(_stream, "reopen", None)
    if reopen_stream is not None:
        reopen_stream()


def configure(log_format: str = "auto", level: str = "info", stream: LogStream | None = None) -> None:
    """Set up structlog for the whole process."""
    global _stream
    stream = stream or sys.stderr
    _stream = stream
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    console = log_format == "console"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty()) if console else structlog.processors.JSONRenderer()
    )
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *([readable_stats] if console else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=_NeverFails(stream)),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    # Library chatter below WARNING is noise for operators, even at --log-level debug.
    root.setLevel(max(numeric, logging.WARNING))


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("bridged").bind(**bound)
