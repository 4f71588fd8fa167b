"""Where messages come from: a protocol-blind worker per binding (worker.py) over one protocol's session.

The supervisor builds workers here and never learns the protocol; the
protocol modules (amqp091.py, amqp10.py) implement session.py's Source and
Session, and neither imports the other or the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridged.config import BindingConfig, BrokerConfig, Config, ReconnectConfig
from bridged.sinks import Sink
from bridged.sources.session import Finding, Source
from bridged.sources.worker import BindingWorker

__all__ = ["BindingWorker", "Finding", "build_worker", "check_connect", "unavailable"]


def unavailable(broker: BrokerConfig) -> str | None:
    """Why the broker's protocol cannot be spoken here (an optional library missing or unfit), or None."""
    if not broker.amqp10:
        return None
    try:
        from bridged.sources import amqp10  # noqa: F401 - imports qpid-proton and checks it (protonio)
    except ImportError as exc:
        return (f"broker.url: amqp10:// needs qpid-proton: pip install 'bridged[amqp10]' "
                f"({str(exc).splitlines()[0][:200]})")  # fmt: skip
    return None


def _source(binding: BindingConfig, broker: BrokerConfig) -> Source:
    """The protocol of the broker's URLs; qpid-proton is imported only when an amqp10:// URL is configured."""
    if broker.amqp10:
        from bridged.sources.amqp10 import Amqp10Source

        return Amqp10Source(binding, broker)
    from bridged.sources.amqp091 import Amqp091Source

    return Amqp091Source(binding, broker)


def build_worker(
    binding: BindingConfig,
    broker: BrokerConfig,
    reconnect: ReconnectConfig,
    sinks: Sequence[Sink],
    on_fatal: Callable[[BindingWorker, int], None] | None = None,
    backlog_interval: float | None = None,
) -> BindingWorker:
    """The worker for *binding*, over a session of the broker's protocol."""
    return BindingWorker(binding, broker, reconnect, sinks, _source(binding, broker), on_fatal, backlog_interval)


def check_connect(config: Config) -> list[Finding]:
    """`--check --connect` for the broker's protocol: one finding per problem with the URLs and bindings."""
    if config.broker.amqp10:
        from bridged.sources import amqp10

        return amqp10.check_connect(config)
    from bridged.sources import amqp091

    return list(amqp091.check_connect(config))
