"""Per-binding counters: histogram buckets, failure reasons, metrics config."""

from __future__ import annotations

import errno

import pytest

from bridged.config import ConfigError
from bridged.sinks import SinkError
from bridged.stats import LATENCY_BUCKETS, LatencyHistogram, failure_reason
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
