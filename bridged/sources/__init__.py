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
    if broker.amqp10:
        from bridged.sources.amqp10 import Amqp10Consumer  # qpid-proton only when an amqp10:// URL is configured

        return Amqp10Consumer(binding, broker, reconnect, sinks, on_fatal, backlog_interval)
    from bridged.sources.amqp091 import BindingConsumer

    return BindingConsumer(binding, broker, reconnect, sinks, on_fatal, backlog_interval)
