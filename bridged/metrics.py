"""The HTTP endpoint: Prometheus /metrics, /healthz (alive) and /readyz (every binding consuming).

Metrics are collected when scraped, from each binding's BindingStats: the
consumers count with plain integers and never touch prometheus_client, so
the endpoint costs the hot path nothing. Only the configured address is
served, on its own thread; it reads the supervisor's state and never
changes it. bridged/httpserver.py serves it, with bounded connections:
a flood of clients cannot take the bridge's threads or descriptors.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from bridged import __version__
from bridged.httpserver import HttpServer, Route
from bridged.stats import BindingStats


class BindingView(Protocol):
    """What the endpoint reads of a consumer."""

    @property
    def name(self) -> str: ...

    @property
    def queue(self) -> str: ...

    @property
    def sink_names(self) -> Sequence[str]: ...

    @property
    def stats(self) -> BindingStats: ...

    def is_consuming(self) -> bool: ...

    def unacked(self) -> int: ...


class BridgedCollector(Collector):
    """Builds every bridged_* metric from the bindings' counters at scrape time."""

    def __init__(self, bindings: Callable[[], Iterable[BindingView]]) -> None:
        self._bindings = bindings

    def collect(self) -> Iterator[Metric]:
        bindings = list(self._bindings())
        labels = ["binding"]
        info = GaugeMetricFamily("bridged_build_info", "bridged version and Python", labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

        counters = {
            "received": ("bridged_messages_received_total", "Messages delivered to the binding by the broker"),
            "acked": (
                "bridged_messages_acked_total",
                "Messages written to every sink, then acked",
            ),
            "filtered": (
                "bridged_messages_filtered_total",
                "Messages the filter dropped (acked without being written)",
            ),
            "redelivered": ("bridged_messages_redelivered_total", "Deliveries the broker marked redelivered"),
            "dead_lettered": ("bridged_messages_dead_lettered_total", "Messages rejected to the dead-letter exchange"),
            "format_failures": ("bridged_format_failures_total", "Messages written marked: formatting failed"),
        }
        for attribute, (name, doc) in counters.items():
            family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
            for b in bindings:
                family.add_metric([b.name], getattr(b.stats, attribute))
            yield family

        written = CounterMetricFamily("bridged_lines_written", "Lines a sink took", labels=["binding", "sink"])
        unconfirmed = CounterMetricFamily(
            "bridged_lines_unconfirmed",
            "Lines a sink sent but could not confirm (RELP, connection lost): sent again, maybe duplicated",
            labels=["binding", "sink"],
        )
        failures = CounterMetricFamily(
            "bridged_sink_failures", "Batches a sink failed to take, by reason", labels=["binding", "sink", "reason"]
        )
        reconnects = CounterMetricFamily(
            "bridged_reconnects", "Connections lost or refused, by reason class", labels=["binding", "reason"]
        )
        latency = HistogramMetricFamily(
            "bridged_batch_write_seconds", "Time a sink took to write one batch", labels=["binding", "sink"]
        )
        consuming = GaugeMetricFamily("bridged_binding_consuming", "1 while the binding consumes", labels=labels)
        unacked = GaugeMetricFamily("bridged_unacked_messages", "Deliveries in hand, not yet acked", labels=labels)
        last = GaugeMetricFamily(
            "bridged_last_message_timestamp_seconds", "When the binding last wrote a batch (0: never)", labels=labels
        )
        ready = GaugeMetricFamily(
            "bridged_queue_messages_ready",
            "Messages waiting in the queue (passive declare)",
            labels=["binding", "queue"],
        )
        consumers = GaugeMetricFamily(
            "bridged_queue_consumers", "Consumers on the queue, bridged included", labels=["binding", "queue"]
        )
        for b in bindings:
            stats = b.stats
            for sink in b.sink_names:
                written.add_metric([b.name, sink], stats.written.get(sink, 0))
                histogram = stats.write_latency.get(sink)
                if histogram is not None:
                    latency.add_metric([b.name, sink], histogram.cumulative(), histogram.sum)
            for sink, count in list(stats.unconfirmed.items()):
                unconfirmed.add_metric([b.name, sink], count)
            for (sink, reason), count in list(stats.sink_failures.items()):
                failures.add_metric([b.name, sink, reason], count)
            for reason, count in list(stats.reconnects.items()):
                reconnects.add_metric([b.name, reason], count)
            consuming.add_metric([b.name], 1 if b.is_consuming() else 0)
            unacked.add_metric([b.name], b.unacked())
            last.add_metric([b.name], stats.last_message_time)
            if stats.queue_ready is not None:
                ready.add_metric([b.name, b.queue], stats.queue_ready)
            if stats.queue_consumers is not None:
                consumers.add_metric([b.name, b.queue], stats.queue_consumers)
        yield from (written, unconfirmed, failures, reconnects, latency, consuming, unacked, last, ready, consumers)


class Probes(Protocol):
    def wedged(self) -> list[str]: ...

    def not_consuming(self) -> list[str]: ...


def _routes(registry: CollectorRegistry, probes: Probes) -> dict[str, Route]:
    def probe(failing: list[str], what: str) -> tuple[int, bytes, str]:
        if failing:
            return 503, f"{what}: {', '.join(sorted(failing))}\n".encode(), TEXT
        return 200, b"ok\n", TEXT

    return {
        "/metrics": lambda: (200, generate_latest(registry), CONTENT_TYPE_LATEST),
        "/healthz": lambda: probe(probes.wedged(), "wedged"),
        "/readyz": lambda: probe(probes.not_consuming(), "not consuming"),
    }


TEXT = "text/plain; charset=utf-8"


def start_metrics(host: str, port: int, bindings: Callable[[], Iterable[BindingView]], probes: Probes) -> HttpServer:
    """Bind the endpoint (raises OSError if the address is taken) and serve it on its own thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BridgedCollector(bindings))
    server = HttpServer(host, port, _routes(registry, probes), f"bridged/{__version__}")
    server.start()
    return server
