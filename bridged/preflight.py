"""`--check --connect`: what a valid config can still meet at run time, found before systemd is told READY.

A wrong password, an exchange no service has declared, a queue that exists
with other arguments and a sink path this user cannot write all fail only
once the daemon runs. This asks the broker's protocol to log in with every
URL and check each binding (changing nothing: see each protocol's
check_connect), and probes each sink.
"""

from __future__ import annotations

from collections.abc import Iterator

from bridged.config import Config
from bridged.sinks import build_sink
from bridged.sources import check_connect


def problems(config: Config) -> list[str]:
    """One line per problem found (empty: the daemon would start cleanly)."""
    return [*check_connect(config), *_sink_problems(config)]


def _sink_problems(config: Config) -> Iterator[str]:
    for name, sink_config in config.sinks.items():
        sink = build_sink(sink_config)
        problem = sink.probe()
        sink.close()
        if problem is not None:
            yield f"sinks.{name}: {problem}"
