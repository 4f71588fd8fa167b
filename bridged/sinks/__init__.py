"""Where lines go: one module per kind of sink, all behind the Sink protocol of base.py."""

from __future__ import annotations

from collections.abc import Mapping

from bridged.config import SinkConfig
from bridged.sinks.base import LineMeta, LineWriter, Sink, SinkClosed, SinkError
from bridged.sinks.file import FileSink
from bridged.sinks.paths import PathTemplateSink
from bridged.sinks.relp import RelpSink
from bridged.sinks.stdout import StdoutSink
from bridged.sinks.syslog import SyslogSink
from bridged.sinks.syslogmsg import truncate_json

__all__ = [
    "FileSink", "LineMeta", "LineWriter", "PathTemplateSink", "RelpSink", "Sink", "SinkClosed", "SinkError",
    "StdoutSink", "SyslogSink", "build_sink", "build_sinks", "truncate_json",
]  # fmt: skip


def build_sink(config: SinkConfig) -> Sink:
    if config.type == "file":
        assert config.path is not None
        if "{" in config.path:
            return PathTemplateSink(config.name, config.path, config.max_open_files)
        return FileSink(config.name, config.path)
    if config.type == "stdout":
        return StdoutSink(config.name)
    if config.type == "relp":
        return RelpSink(config)
    return SyslogSink(config)


def build_sinks(configs: Mapping[str, SinkConfig]) -> dict[str, Sink]:
    """One sink object per declared sink, shared by every binding that names it."""
    return {name: build_sink(config) for name, config in configs.items()}
