"""How bridged scales with message size and with bindings per process, against the compiled Go ceiling, in one run.

By size: one queue pre-filled with persistent JSON bodies of 100 B, 1 KiB,
64 KiB and 1 MiB (counts shrink with size, --budget MiB each), drained by
the Go consumer acking per 256 (bench/go/consumer.go) and by a real
`bridged --config` (format json, redaction on, one file sink).
By bindings: 1, 4 and 16 bindings in one bridged process (and 16 split
over two processes), each on its own queue holding --count/N ~600-byte
messages, against as many Go consumers running at once. Prints msg/s,
MB/s and bridged / Go. The Go consumer writes nothing; bridged writes
every line to a real file, so at large sizes the disk is part of its figure.

    python bench/scaling.py [--count 60000] [--budget 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import amqp
import yaml
from common import URL, LineCounter, connect, delete_queue, notification, run_bridged, stop_all
from throughput import build_go_consumer

SIZES = (100, 1024, 64 * 1024, 1024 * 1024)


def body_of(size: int, i: int) -> bytes:
    """A JSON object of exactly *size* bytes."""
    head = b'{"seq":%d,"pad":"' % i
    return head + b"x" * (size - len(head) - 2) + b'"}'


def fill(queue: str, bodies: list[bytes], count: int) -> None:
    conn = connect()
    channel = conn.channel()
    channel.queue_delete(queue)
    channel.queue_declare(queue, durable=True, auto_delete=False)
    for i in range(count):
        channel.basic_publish(amqp.Message(bodies[i % len(bodies)], delivery_mode=2), exchange="", routing_key=queue)
    while channel.queue_declare(queue, passive=True).message_count < count:
        time.sleep(0.05)
    conn.close()


def go_drain(binary: Path, queues: list[str], per_queue: int) -> float:
    """Seconds until Go consumers, one per queue and all at once, drained them (acking per 256)."""
    started = time.monotonic()
    procs = [subprocess.Popen([str(binary), "--url", URL.removesuffix("/"), "--queue", q, "--count", str(per_queue),
                               "--ack-batch", "256"], stdout=subprocess.PIPE) for q in queues]  # fmt: skip
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        json.loads(out)
    return time.monotonic() - started


def bridged_drain(queues: list[str], total: int, directory: Path, processes: int = 1) -> float:
    """Seconds (first line to last) for bridged with one binding per queue, the bindings split over *processes*."""
    counters, procs = [], []
    for p in range(processes):
        out = directory / f"out{p}.log"
        out.unlink(missing_ok=True)
        bindings = {f"b{i}": {"exchange": "amq.direct", "exchange_type": "direct", "routing_keys": [q], "queue": q,
                              "sink": "f", "format": "json"}
                    for i, q in enumerate(queues) if i % processes == p}  # fmt: skip
        config = {"broker": {"url": URL}, "sinks": {"f": {"type": "file", "path": str(out)}}, "bindings": bindings}
        path = directory / f"bridged{p}.yaml"
        path.write_text(yaml.safe_dump(config))
        procs.append(subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(path), "--log-level",
                                       "warning"], stdout=subprocess.DEVNULL))  # fmt: skip
        counters.append(LineCounter(out))
    try:
        while sum(c.update() for c in counters) == 0:
            time.sleep(0.001)
        started = time.monotonic()
        while sum(c.update() for c in counters) < total:
            time.sleep(0.01)
        return (time.monotonic() - started) * total / (total - 1)
    finally:
        stop_all(procs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60_000, help="messages per run (the largest sizes get fewer)")
    parser.add_argument("--budget", type=int, default=256, help="MiB of bodies per size at most")
    args = parser.parse_args()
    build = Path(tempfile.mkdtemp(prefix="bridged-bench-scaling-"))
    binary = build_go_consumer(build)
    if binary is None:
        return 2
    base = f"bridged.bench.scaling.{os.getpid()}"
    rows: list[tuple[str, int, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            count = max(200, min(args.count, args.budget * 1024 * 1024 // size))
            bodies = [body_of(size, i) for i in range(16)]
            fill(base, bodies, count)
            go = count / go_drain(binary, [base], count)
            fill(base, bodies, count)
            ours = count / run_bridged(base, count, "json")
            rows.append((f"{size} B body", size, go, ours, count))
            print(f"  {size:8d} B x {count}: Go {go:8.0f} msg/s, bridged {ours:8.0f} msg/s", flush=True)
        delete_queue(base)
        bodies = [notification(i) for i in range(16)]
        for n, processes in ((1, 1), (4, 1), (16, 1), (16, 2)):
            queues = [f"{base}.{i}" for i in range(n)]
            per_queue = args.count // n
            for q in queues:
                fill(q, bodies, per_queue)
            go = n * per_queue / go_drain(binary, queues, per_queue)
            for q in queues:
                fill(q, bodies, per_queue)
            ours = n * per_queue / bridged_drain(queues, n * per_queue, Path(tmp), processes)
            case = f"{n} binding(s)" + (f", {processes} procs" if processes > 1 else "")
            rows.append((case, len(bodies[0]), go, ours, n * per_queue))
            print(f"  {case}: Go {go:8.0f} msg/s, bridged {ours:8.0f} msg/s", flush=True)
            for q in queues:
                delete_queue(q)
    print("\nformat json (redaction on), persistent messages; ceiling: Go amqp091 acking per 256, writing nothing")
    print(f"{'case':18s} {'messages':>8s} {'Go msg/s':>9s} {'Go MB/s':>8s} {'bridged msg/s':>14s} "
          f"{'bridged MB/s':>13s} {'x Go':>6s}")  # fmt: skip
    for case, size, go, ours, count in rows:
        print(f"{case:18s} {count:8.0f} {go:9.0f} {go * size / 1e6:8.1f} {ours:14.0f} {ours * size / 1e6:13.1f} "
              f"{ours / go:6.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
