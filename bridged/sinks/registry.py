"""The sink types: each sink module registers its `type:` name, how to read its settings and how to build it.

As rq's serializers or Redpanda Connect's RegisterInput: a new sink is one
module that calls register(); config.py and the supervisor only look it up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from bridged import configkit as ck
from bridged.sinks.base import Sink, SinkConfig


class SinkType(NamedTuple):
    parse: Callable[[str, ck.Section], SinkConfig]  # (sink name, its section) -> its settings, or ConfigError
    build: Callable[[Any], Sink]  # its settings -> the sink


_TYPES: dict[str, SinkType] = {}


def register(name: str, parse: Callable[[str, ck.Section], Any], build: Callable[[Any], Sink]) -> None:
    _TYPES[name] = SinkType(parse, build)


def sink_types() -> tuple[str, ...]:
    """The registered `type:` names, in registration order."""
    return tuple(_TYPES)


def parse_sink(name: str, section: ck.Section) -> SinkConfig:
    """The settings of sink *name* from its section, by its `type:` (the caller checks leftover keys)."""
    kind = section.get("type", ck.choice(sink_types()))
    return _TYPES[kind].parse(name, section)


def build_sink(config: SinkConfig) -> Sink:
    return _TYPES[config.type].build(config)
