"""`--check --connect`: what a valid config can still meet at run time, found before systemd is told READY.

A wrong password, an exchange no service has declared, a queue that exists
with other arguments and a sink path this user cannot write all fail only
once the daemon runs. This asks the broker's protocol to log in with every
URL and check each binding (changing nothing: see each protocol's
check_connect), and probes each sink. What the daemon would only wait for
(a service not deployed yet) is a warning, not an error.
"""

from __future__ import annotations

from collections.abc import Iterator

from bridged.config import Config
from bridged.sinks import build_sink
from bridged.sources import Finding, check_connect


def findings(config: Config) -> list[Finding]:
    """One finding per problem (the daemon would fail at it) or warning (it would wait); empty: all is ready."""
    return [*check_connect(config), *_sink_problems(config), *_metrics_problems(config)]


def _metrics_problems(config: Config) -> Iterator[Finding]:
    """The metrics address must be free to bind now (the daemon binds it before it says it runs)."""
    if config.metrics.listen is None:
        return
    host, port = config.metrics.listen
    from bridged.httpserver import listen

    try:
        listen(host, port).close()
    except OSError as exc:
        yield Finding(f"metrics.listen: {host}:{port}: {exc.strerror or exc}")


def _sink_problems(config: Config) -> Iterator[Finding]:
    for name, sink_config in config.sinks.items():
        sink = build_sink(sink_config)
        problem = sink.probe()
        sink.close()
        if problem is not None:
            yield Finding(f"sinks.{name}: {problem}")
