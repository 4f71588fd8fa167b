"""Where messages come from: one module per protocol, each giving the supervisor a BindingWorker per binding."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridged.config import BindingConfig, BrokerConfig, ReconnectConfig
from bridged.sinks import Sink
from bridged.sources.base import BindingWorker

__all__ = ["BindingWorker", "build_worker"]


def build_worker(
    binding: BindingConfig,
    broker: BrokerConfig,
    reconnect: ReconnectConfig,
    sinks: Sequence[Sink],
    on_fatal: Callable[[BindingWorker, int], None] | None = None,
    backlog_interval: float | None = None,
) -> BindingWorker:
    """The worker for *binding*, by the protocol of the broker's URLs."""
    from bridged.sources.amqp091 import BindingConsumer

    return BindingConsumer(binding, broker, reconnect, sinks, on_fatal, backlog_interval)
