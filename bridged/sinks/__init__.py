"""Where lines go: one module per sink type, each registering its settings and builder (registry.py).

base.py holds what every sink is (the Sink protocol, SinkConfig, SinkError,
LineWriter). Importing this package registers every type: file (one path or
a path template), stdout, syslog, relp.
"""

from __future__ import annotations

from collections.abc import Mapping

# Each module registers its type on import; this order is the order `type:` choices are listed in.
# isort: off
from bridged.sinks import file  # noqa: F401
from bridged.sinks import stdout  # noqa: F401
from bridged.sinks import syslog  # noqa: F401
from bridged.sinks import relp  # noqa: F401

# isort: on
from bridged.sinks.base import LineMeta, LineWriter, Sink, SinkClosed, SinkConfig, SinkDone, SinkError
from bridged.sinks.file import FileSink, FileSinkConfig
from bridged.sinks.paths import PathTemplateSink
from bridged.sinks.registry import build_sink, parse_sink, sink_types
from bridged.sinks.relp import RelpSink, RelpSinkConfig
from bridged.sinks.stdout import StdoutSink
from bridged.sinks.syslog import SyslogSink
from bridged.sinks.syslogmsg import SyslogSinkConfig, truncate_json

__all__ = [
    "FileSink", "FileSinkConfig", "LineMeta", "LineWriter", "PathTemplateSink", "RelpSink", "RelpSinkConfig", "Sink",
    "SinkClosed", "SinkConfig", "SinkDone", "SinkError", "StdoutSink", "SyslogSink", "SyslogSinkConfig", "build_sink",
    "build_sinks", "parse_sink", "sink_types", "truncate_json",
]  # fmt: skip


def build_sinks(configs: Mapping[str, SinkConfig]) -> dict[str, Sink]:
    """One sink object per declared sink, shared by every binding that names it."""
    return {name: build_sink(config) for name, config in configs.items()}
