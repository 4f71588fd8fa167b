"""Per-binding counters: histogram buckets, failure reasons, metrics config."""

from __future__ import annotations

import errno

import pytest

from bridged.config import ConfigError
from bridged.log import readable_stats
from bridged.sinks import SinkError
from bridged.stats import LATENCY_BUCKETS, BindingStats, LatencyHistogram, failure_reason
from tests.unit.test_config import BASE, parse


def test_histogram_is_cumulative_and_ends_with_inf():
    histogram = LatencyHistogram()
    for seconds in (0.0001, 0.003, 0.003, 20.0):
        histogram.observe(seconds)
    buckets = dict(histogram.cumulative())
    assert buckets["0.0005"] == 1 and buckets["0.005"] == 3 and buckets["10.0"] == 3 and buckets["+Inf"] == 4
    assert len(buckets) == len(LATENCY_BUCKETS) + 1 and histogram.sum == pytest.approx(20.0061)


def test_failure_reasons_are_short_and_bounded():
    def failed(cause: BaseException) -> SinkError:
        try:
            raise SinkError("x") from cause
        except SinkError as exc:
            return exc

    assert failure_reason(failed(OSError(errno.ENOSPC, "No space left on device"))) == "ENOSPC"
    assert failure_reason(failed(TimeoutError("timed out"))) == "timeout"
    assert failure_reason(failed(BrokenPipeError(errno.EPIPE, "Broken pipe"))) == "EPIPE"
    assert failure_reason(SinkError("plain")) == "SinkError"


def test_metrics_settings():
    assert parse(BASE).metrics.listen is None and parse(BASE).metrics.stats_interval == 60
    config = parse({**BASE, "metrics": {"listen": "[::1]:9125", "stats_interval": 0}})
    assert config.metrics.listen == ("::1", 9125) and config.metrics.stats_interval == 0
    assert parse({**BASE, "metrics": {"listen": ":9125"}}).metrics.listen == ("", 9125)
    for bad in ("9125", "host:port", "h:0", "h:70000"):
        with pytest.raises(ConfigError, match=r"metrics.listen: .* is not host:port"):
            parse({**BASE, "metrics": {"listen": bad}})


def test_a_snapshot_never_shows_more_settled_than_received():
    """The stats line reads counters while the binding's thread counts on: settled is read before received."""

    class CountingOn(BindingStats):
        """Another message is received and acked between any two reads (the worst interleaving)."""

        def __getattribute__(self, name: str) -> object:
            if name in ("received", "acked"):
                object.__setattr__(self, "received", object.__getattribute__(self, "received") + 1)
                object.__setattr__(self, "acked", object.__getattribute__(self, "acked") + 1)
            return object.__getattribute__(self, name)

    stats = CountingOn()
    for _ in range(3):
        snapshot = stats.snapshot()
        assert 0 < snapshot["acked"] <= snapshot["received"]


def test_console_stats_line_reads_as_key_value_per_binding():
    counts = {"received": 12, "acked": 10, "filtered": 0, "redelivered": 2, "backlog": None, "unacked": 2}
    event = readable_stats(None, "info", {"event": "stats", "bindings": {"nova": counts, "glance": {"received": 0}}})
    assert event["bindings"] == ("nova[received=12 acked=10 backlog=- unacked=2 redelivered=2] "
                                 "glance[received=0 acked=- backlog=- unacked=-]")  # fmt: skip
    other = {"event": "consuming", "bindings": {"a": 1}}
    assert readable_stats(None, "info", dict(other)) == other
