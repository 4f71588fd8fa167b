"""`type: file`: one path (FileSink), or a path template with {fields} (PathTemplateSink)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridged import configkit as ck
from bridged.sinks.appender import FileSink
from bridged.sinks.base import Sink, SinkConfig
from bridged.sinks.paths import PathTemplateError, PathTemplateSink, parse_path_template
from bridged.sinks.registry import register

__all__ = ["FileSink", "FileSinkConfig", "PathTemplateSink"]

# Files a path-template sink keeps open at once (least recently used closed first).
DEFAULT_MAX_OPEN_FILES = 64


@dataclass(frozen=True)
class FileSinkConfig(SinkConfig):
    path: str = ""
    max_open_files: int = DEFAULT_MAX_OPEN_FILES  # a path with {fields}: files open at once
    fsync: bool = False  # a batch is on disk (fdatasync) before it is acked, not only in the OS
    fallback_path: str | None = None  # a path with {fields}: where lines go whose own path cannot hold a file

    @property
    def templated(self) -> bool:
        return "{" in self.path


def _file_path(value: Any, where: str) -> str:
    """A file path, or a path template with {fields} under a fixed directory."""
    path = ck.name(value, where)
    if "{" in path or "}" in path:
        try:
            parse_path_template(path)
        except PathTemplateError as exc:
            raise ck.ConfigError(where, str(exc)) from None
    return path


def parse_config(name: str, section: ck.Section) -> FileSinkConfig:
    path = section.get("path", _file_path)
    fsync = section.get("fsync", ck.boolean, False)
    if "{" not in path:
        return FileSinkConfig(name, "file", path=path, fsync=fsync)
    max_open = section.get("max_open_files", ck.integer(1, 10_000), DEFAULT_MAX_OPEN_FILES)
    fallback = section.get("fallback_path", _fallback_path, None)
    return FileSinkConfig(name, "file", path=path, max_open_files=max_open, fsync=fsync, fallback_path=fallback)


def _fallback_path(value: Any, where: str) -> str:
    path = ck.name(value, where)
    if "{" in path or "}" in path:
        raise ck.ConfigError(where, "is one fixed file (no {fields}): the lines whose own path cannot hold a file")
    return path


def build(config: FileSinkConfig) -> Sink:
    if config.templated:
        return PathTemplateSink(
            config.name, config.path, config.max_open_files, fsync=config.fsync, fallback_path=config.fallback_path
        )
    return FileSink(config.name, config.path, fsync=config.fsync)


register("file", parse_config, build)
