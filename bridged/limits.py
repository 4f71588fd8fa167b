"""The open-file budget: what a config can keep open at once, and the process's limit raised to fit it.

A binding holds its broker connection (and, while the broker is away, a
probe of its port); a file sink one file, a path template up to
max_open_files; a syslog or RELP sink one socket (two while it reconnects);
the metrics endpoint its connections. systemd's default soft limit is 1,024
and docker's varies: bridged raises its soft limit up to the hard one when
the config needs more, and warns once at start when even that is too little.
"""

from __future__ import annotations

import resource

from bridged.config import Config
from bridged.httpserver import MAX_CONNECTIONS
from bridged.sinks.file import FileSinkConfig

# The interpreter's own (standard streams, its log, the supervisor's wake pipe, the systemd socket, a pidfile,
# a health file being touched, an import in progress) with room to spare.
BASE = 24
PER_BINDING = 2  # its connection, and a probe of the broker's port while the broker refuses connections
PER_FILE_SINK = 2  # the file, and the next one while it reopens (logrotate)
PER_SOCKET_SINK = 2  # the socket, and the next one while it reconnects
METRICS_EXTRA = 3  # the endpoint's listener and wake pipe, beside its connections


def descriptors_needed(config: Config) -> int:
    """The most descriptors *config* can hold open at once."""
    needed = BASE + PER_BINDING * len(config.bindings)
    for sink in config.sinks.values():
        if isinstance(sink, FileSinkConfig):
            needed += sink.max_open_files + 2 if sink.templated else PER_FILE_SINK  # a template: its base dir too
        else:
            needed += PER_SOCKET_SINK
    if config.metrics.listen is not None:
        needed += MAX_CONNECTIONS + METRICS_EXTRA
    return needed


def fit_open_files(config: Config) -> str | None:
    """Raise the soft open-file limit to what *config* needs (never above the hard limit); a one-line warning
    when the hard limit is below it, else None."""
    needed = descriptors_needed(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed <= soft:
        return None
    limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if limit < needed:
        return (f"the config can hold about {needed} files and sockets open at once, but the open-file limit is "
                f"{hard}: raise it (LimitNOFILE= in the unit, ulimit -n, docker run --ulimit nofile=...) or lower "
                "sinks.*.max_open_files")  # fmt: skip
    return None
