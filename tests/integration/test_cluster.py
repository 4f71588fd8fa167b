"""Several instances and high availability on a real 3-node RabbitMQ cluster with quorum queues.

A confirming publisher streams persistent messages while a node or a bridged
instance goes away; every confirmed message must end up in a sink (at least
once). The cluster takes about 20 s to form, so these run with `-m slow`.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import amqp
import pytest

from tests.integration.cluster import RabbitCluster, available
from tests.integration.conftest import Bridged, base_config, read_lines, wait_until
from tests.integration.reliability import StreamPublisher

pytestmark = pytest.mark.slow

# base_config's reconnect ceiling and heartbeat: the waits below derive from them.
RECONNECT_MAX = 2.0
HEARTBEAT = 10.0
# A quorum queue elects a new leader within a few seconds of losing one (Raft election timeout).
ELECTION_LIMIT = 60.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    if not available():
        if os.environ.get("CI"):
            pytest.fail("the cluster tests need root, setpriv and rabbitmq-server installed")
        pytest.skip("the cluster tests need root, setpriv and rabbitmq-server installed")
    c = RabbitCluster(Path(tempfile.mkdtemp(prefix="bridged-cluster-")))
    try:
        c.form()
        yield c
    finally:
        c.destroy()


# What the cluster tests' publisher sends, through a node that stays up.
BODY = "m-{:06d}".format


def declare_quorum_queue(cluster: RabbitCluster, node: int, exchange: str, queue: str, **arguments: object) -> None:
    """Declare the exchange and queue through *node* (a quorum queue's leader starts where it is declared)."""
    conn = amqp.Connection(f"127.0.0.1:{cluster.ports[node]}", userid="guest", password="guest")
    conn.connect()
    channel = conn.channel()
    channel.exchange_declare(exchange, "direct", durable=True, auto_delete=False)
    channel.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum", **arguments})
    channel.queue_bind(queue, exchange, "k")
    conn.close()


def instance_config(cluster: RabbitCluster, exchange: str, queue: str, out: Path, first: int = 0,
                    **arguments: object) -> dict:  # fmt: skip
    """A bridged config on the cluster: every node's URL, starting with node *first*."""
    urls = cluster.urls[first:] + cluster.urls[:first]
    binding = {"exchange": exchange, "exchange_type": "direct", "routing_keys": ["k"], "queue": queue,
               "sink": "f", "format": "raw", "queue_arguments": {"x-queue-type": "quorum", **arguments}}  # fmt: skip
    return base_config({"f": {"type": "file", "path": str(out)}}, {"ha": binding},
                       broker={"url": urls, "heartbeat": HEARTBEAT})  # fmt: skip


def tally(lines: list[str], confirmed: list[str]) -> tuple[int, int]:
    """(lost, duplicated): confirmed messages missing from *lines*, and extra copies."""
    counts = Counter(lines)
    return len(set(confirmed) - counts.keys()), sum(n - 1 for n in counts.values() if n > 1)


def event_time(bridged: Bridged, event: str, nth: int) -> float:
    """Wall-clock time (epoch seconds) of the *nth* (1-based) *event* in bridged's log."""
    stamps = [e["timestamp"] for e in bridged.events() if e.get("event") == event]
    return datetime.fromisoformat(stamps[nth - 1].replace("Z", "+00:00")).timestamp()


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[list[Bridged]]:
    started: list[Bridged] = []
    yield started
    for bridged in started:
        bridged.kill()


def start(instances: list[Bridged], tmp_path: Path, config: dict) -> Bridged:
    bridged = Bridged(tmp_path, config)
    instances.append(bridged)
    return bridged


def test_leader_node_stopped_mid_stream(cluster, uid, tmp_path, instances):
    """stop_app on the node that holds the queue leader: bridged moves to another node and loses nothing."""
    exchange, queue, out = f"ha.{uid}", f"bridged.ha.{uid}", tmp_path / "out.log"
    declare_quorum_queue(cluster, 0, exchange, queue)
    assert cluster.leader(queue) == 0
    bridged = start(instances, tmp_path, instance_config(cluster, exchange, queue, out))
    bridged.wait_event("consuming")
    count, rate = 3000, 300.0
    publisher = StreamPublisher(
        exchange, "k", count, rate=rate, host=f"127.0.0.1:{cluster.ports[2]}", name=BODY
    )  # through a node that stays up
    publisher.start()
    wait_until(lambda: len(publisher.confirmed) >= count / 3, 2 * count / rate, "a third published")
    stopped_at = time.time()
    cluster.stop_app(0)
    try:
        new_leader = cluster.wait_leader_elected(queue, not_on=0, timeout=ELECTION_LIMIT)
        bridged.wait_event("consuming", count=2, timeout=ELECTION_LIMIT + 4 * RECONNECT_MAX)
        recovered = event_time(bridged, "consuming", 2) - stopped_at
        publisher.join(4 * count / rate + ELECTION_LIMIT)
    finally:
        cluster.start_app(0)
    wait_until(lambda: set(publisher.confirmed) <= set(read_lines(out)), 60, "every confirmed message")
    lost, duplicated = tally(read_lines(out), publisher.confirmed)
    print(f"\nleader failover: {len(publisher.confirmed)} confirmed, lost {lost}, duplicated {duplicated}; "
          f"new leader node {new_leader + 1}; consuming again {recovered:.1f} s after stop_app")  # fmt: skip
    assert len(publisher.confirmed) == count and lost == 0


def test_single_active_consumer_hot_standby(cluster, uid, tmp_path, instances):
    """Two instances on a single-active-consumer quorum queue: one writes; kill -9 it and the standby takes over."""
    exchange, queue = f"ha.{uid}", f"bridged.ha.{uid}"
    declare_quorum_queue(cluster, 0, exchange, queue, **{"x-single-active-consumer": True})
    out_a, out_b = tmp_path / "a.log", tmp_path / "b.log"
    sac = {"x-single-active-consumer": True}
    active = start(instances, tmp_path, instance_config(cluster, exchange, queue, out_a, first=0, **sac))
    active.wait_event("consuming")
    standby = start(instances, tmp_path, instance_config(cluster, exchange, queue, out_b, first=1, **sac))
    standby.wait_event("consuming")
    assert standby.count("queue_standby") == 1 and standby.count("queue_shared") == 0
    count, rate = 2000, 300.0
    publisher = StreamPublisher(exchange, "k", count, rate=rate, host=f"127.0.0.1:{cluster.ports[2]}", name=BODY)
    publisher.start()
    wait_until(lambda: len(read_lines(out_a)) >= count / 3, 2 * count / rate, "a third written by the active one")
    assert read_lines(out_b) == []  # while both run, only one writes
    killed_at = time.monotonic()
    active.kill()
    wait_until(lambda: read_lines(out_b), 4 * RECONNECT_MAX + HEARTBEAT, "the standby writing")
    takeover = time.monotonic() - killed_at
    publisher.join(4 * count / rate)
    wait_until(lambda: set(publisher.confirmed) <= set(read_lines(out_a) + read_lines(out_b)), 60, "all confirmed")
    union = read_lines(out_a) + read_lines(out_b)
    lost, duplicated = tally(union, publisher.confirmed)
    print(f"\nhot standby: {len(publisher.confirmed)} confirmed, lost {lost}, duplicated {duplicated} "
          f"(active wrote {len(read_lines(out_a))}, standby {len(read_lines(out_b))}); "
          f"standby writing {takeover:.2f} s after kill -9")  # fmt: skip
    assert lost == 0


def test_three_competing_instances_one_killed_and_restarted(cluster, uid, tmp_path, instances):
    """Three instances share one quorum queue; one is killed with SIGKILL and restarted: the union is complete."""
    exchange, queue = f"ha.{uid}", f"bridged.ha.{uid}"
    declare_quorum_queue(cluster, 0, exchange, queue)
    outs = [tmp_path / f"instance{i}.log" for i in range(3)]
    configs = [instance_config(cluster, exchange, queue, outs[i], first=i) for i in range(3)]
    for config in configs:
        start(instances, tmp_path, config).wait_event("consuming")
    count, rate = 3000, 300.0
    publisher = StreamPublisher(exchange, "k", count, rate=rate, host=f"127.0.0.1:{cluster.ports[2]}", name=BODY)
    publisher.start()
    wait_until(lambda: len(publisher.confirmed) >= count / 3, 2 * count / rate, "a third published")
    instances[1].proc.send_signal(signal.SIGKILL)
    instances[1].proc.wait(10)
    wait_until(lambda: len(publisher.confirmed) >= 2 * count / 3, 2 * count / rate, "two thirds published")
    start(instances, tmp_path, configs[1]).wait_event("consuming")
    publisher.join(4 * count / rate)
    wait_until(lambda: set(publisher.confirmed) <= {line for out in outs for line in read_lines(out)}, 60,
               "every confirmed message in one of the files")  # fmt: skip
    union = [line for out in outs for line in read_lines(out)]
    lost, duplicated = tally(union, publisher.confirmed)
    shares = [len(read_lines(out)) for out in outs]
    print(f"\ncompeting: {len(publisher.confirmed)} confirmed, lost {lost}, duplicated {duplicated}, "
          f"lines per instance {shares}")  # fmt: skip
    assert lost == 0 and all(shares)
