"""Competing bridged instances on a 3-node RabbitMQ cluster: aggregate throughput of 1, 2 and 3, in one run.

A cluster of three nodes is formed on this machine (tests/integration/cluster.py,
about 20 s), a quorum queue is declared through node 1 (its leader) and
filled with --count persistent ~600-byte JSON messages; then 1, 2 and 3
real `bridged --config` processes (instance i connects to node i first,
format raw, each to its own file) drain it together. Printed per run:
aggregate msg/s, the ratio to one instance, and the CPU the broker nodes
and the bridged processes used, in cores. Needs root (the nodes run as the
rabbitmq user).

    python bench/cluster.py [--count 50000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' cluster helper

import amqp
import yaml
from common import LineCounter, cpu_seconds, notification, stop_all

from tests.integration.cluster import RabbitCluster, available

QUEUE = "bridged.bench.cluster"


def fill(port: int, count: int) -> None:
    conn = amqp.Connection(f"127.0.0.1:{port}", userid="guest", password="guest")
    conn.connect()
    channel = conn.channel()
    channel.queue_delete(QUEUE)
    channel.queue_declare(QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    bodies = [notification(i) for i in range(256)]
    for i in range(count):
        channel.basic_publish(amqp.Message(bodies[i % 256], delivery_mode=2), exchange="", routing_key=QUEUE)
    while channel.queue_declare(QUEUE, passive=True).message_count < count:
        time.sleep(0.1)
    conn.close()


def drain(cluster: RabbitCluster, instances: int, count: int, directory: Path) -> dict[str, float]:
    """Start *instances* bridged processes on the filled queue; msg/s and CPU cores once all lines are out."""
    outs, procs = [], []
    for i in range(instances):
        out = directory / f"instance{i}.log"
        out.unlink(missing_ok=True)
        urls = cluster.urls[i:] + cluster.urls[:i]
        config = {
            "broker": {"url": urls, "heartbeat": 30},
            "sinks": {"f": {"type": "file", "path": str(out)}},
            "bindings": {"bench": {"exchange": "amq.direct", "exchange_type": "direct", "routing_keys": [QUEUE],
                                   "queue": QUEUE, "sink": "f", "queue_arguments": {"x-queue-type": "quorum"}}},
        }  # fmt: skip
        path = directory / f"instance{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        outs.append(LineCounter(out))
        procs.append(subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(path), "--log-level",
                                       "warning"], stdout=subprocess.DEVNULL))  # fmt: skip
    brokers = [int((cluster.directory(i) / "pid").read_text()) for i in range(len(cluster.names))]
    try:
        while sum(c.update() for c in outs) == 0:
            time.sleep(0.001)
        started = time.monotonic()
        broker_cpu = sum(cpu_seconds(pid) for pid in brokers)
        bridged_cpu = sum(cpu_seconds(p.pid) for p in procs)
        deadline = started + 600
        while sum(c.update() for c in outs) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the instances did not write every message")
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        return {
            "rate": count / elapsed,
            "broker_cores": (sum(cpu_seconds(pid) for pid in brokers) - broker_cpu) / elapsed,
            "bridged_cores": (sum(cpu_seconds(p.pid) for p in procs) - bridged_cpu) / elapsed,
            "shares": [c.count for c in outs],  # type: ignore[dict-item]
        }
    finally:
        stop_all(procs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not available():
        print("needs root, setpriv and rabbitmq-server", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="bridged-bench-cluster-"))
    cluster = RabbitCluster(base, prefix="bridged-bench-c")
    try:
        cluster.form()
        best: dict[int, dict[str, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for instances in (1, 2, 3):
                    fill(cluster.ports[0], args.count)
                    result = drain(cluster, instances, args.count, Path(tmp))
                    print(f"  {instances} instance(s): {result['rate']:8.0f} msg/s, broker "
                          f"{result['broker_cores']:.2f} cores, bridged {result['bridged_cores']:.2f} cores, "
                          f"lines per instance {result['shares']}", flush=True)  # fmt: skip
                    if result["rate"] > best.get(instances, {"rate": 0.0})["rate"]:
                        best[instances] = result
    finally:
        cluster.destroy()
    one = best[1]["rate"]
    print(f"\n{args.count} persistent ~600-byte messages in a quorum queue on a 3-node cluster (one host), "
          f"best of {args.rounds} round(s)")  # fmt: skip
    print("instances   msg/s   x one   broker CPU (cores)   bridged CPU (cores)")
    for instances, result in sorted(best.items()):
        print(f"{instances:9d} {result['rate']:7.0f} {result['rate'] / one:7.2f} {result['broker_cores']:20.2f} "
              f"{result['bridged_cores']:21.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
