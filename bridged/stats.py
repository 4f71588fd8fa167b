"""What one binding has done, counted with plain integers on its own thread.

The consumer only adds to these (a few nanoseconds per message, most of it
per batch); the metrics endpoint and the `stats` log line read them from
other threads. Nothing here imports prometheus_client: the endpoint is
optional, the counting is not.
"""

from __future__ import annotations

import bisect
import errno
from collections import defaultdict

# Batch write latency buckets, seconds: a page-cache write takes microseconds,
# a syslog server under load or a slow disk hundreds of milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram:
    """Cumulative-ready bucket counts and a sum, like a Prometheus histogram."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count of observations at or below it), ending with +Inf."""
        total, out = 0, []
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class BindingStats:
    """Counters of one binding since bridged started."""

    def __init__(self) -> None:
        self.received = 0
        self.acked = 0
        self.filtered = 0  # dropped by the binding's filter (acked, not written)
        self.redelivered = 0
        self.dead_lettered = 0
        self.format_failures = 0
        self.written: defaultdict[str, int] = defaultdict(int)  # per sink
        self.sink_failures: defaultdict[tuple[str, str], int] = defaultdict(int)  # (sink, reason)
        self.unconfirmed: defaultdict[str, int] = defaultdict(int)  # per sink: sent, unconfirmed, sent again
        self.reconnects: defaultdict[str, int] = defaultdict(int)  # per reason class
        self.write_latency: defaultdict[str, LatencyHistogram] = defaultdict(LatencyHistogram)  # per sink
        self.last_message_time = 0.0  # wall clock of the last batch written, 0 before the first
        self.queue_ready: int | None = None  # from the last passive declare
        self.queue_consumers: int | None = None

    def snapshot(self) -> dict[str, int]:
        """The counts the `stats` log line compares from one line to the next.

        Read while the binding's thread counts on: what ends a message's
        journey (acked, filtered, dead-lettered) is read before what begins it
        (received), so a snapshot never shows more settled than received.
        """
        settled = (self.acked, self.filtered, self.dead_lettered)
        return {
            "received": self.received,
            "acked": settled[0],
            "filtered": settled[1],
            "redelivered": self.redelivered,
            "dead_lettered": settled[2],
            "format_failures": self.format_failures,
            "sink_failures": sum(self.sink_failures.values()),
            "unconfirmed": sum(self.unconfirmed.values()),
            "reconnects": sum(self.reconnects.values()),
        }


def failure_reason(exc: BaseException) -> str:
    """A short, bounded label for why a write failed: the errno name (ENOSPC, EPIPE) or the kind."""
    cause = exc.__cause__ or exc
    if isinstance(cause, TimeoutError):
        return "timeout"
    if isinstance(cause, OSError) and cause.errno is not None and cause.errno in errno.errorcode:
        return errno.errorcode[cause.errno]
    return type(cause).__name__
