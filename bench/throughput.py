"""Throughput on one pre-filled queue: bridged against a no-ack ceiling and a plain kombu consumer.

Each contender drains the same 100,000 persistent ~600-byte JSON messages
from a durable queue, one after another, in one run; the script prints msg/s
and the ratios (this machine is shared and noisy: compare ratios, not
absolute numbers).

    python bench/throughput.py [--count 100000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import URL, connect, delete_queue, fill_queue, run_bridged
from kombu import Connection, Consumer, Queue


def ceiling(queue: str, count: int) -> float:
    """A bare py-amqp consumer: no acks, writes nothing. Nothing can be faster."""
    conn = connect()
    channel = conn.channel()
    channel.basic_qos(0, 1000, False)
    received = 0

    def on_message(message: object) -> None:
        nonlocal received
        received += 1

    channel.basic_consume(queue, callback=on_message, no_ack=True)
    conn.drain_events(timeout=10)
    started = time.monotonic()
    while received < count:
        conn.drain_events()  # blocking: no per-call timeout bookkeeping, the fastest py-amqp loop
    elapsed = time.monotonic() - started
    conn.close()
    return elapsed * count / (count - 1)


def kombu_per_message_ack(queue: str, count: int) -> float:
    """The usual kombu consumer: write each message to a file, flush, ack it."""
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "out.log", "ab") as out:
        received = 0
        started = 0.0

        def on_message(message: object) -> None:
            nonlocal received, started
            if not received:
                started = time.monotonic()
            out.write(message.body + b"\n")  # type: ignore[attr-defined]
            out.flush()
            message.ack()  # type: ignore[attr-defined]
            received += 1

        with Connection(URL) as conn:
            consumer = Consumer(conn, queues=[Queue(queue, durable=True, no_declare=True)],
                                on_message=on_message, prefetch_count=1000)  # fmt: skip
            with consumer:
                while received < count:
                    conn.drain_events(timeout=10)
        return (time.monotonic() - started) * count / (count - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1, help="repeat and keep each contender's best")
    args = parser.parse_args()
    count = args.count
    queue = f"bridged.bench.{os.getpid()}"
    contenders = {
        "ceiling (py-amqp, no ack, no write)": lambda: ceiling(queue, count),
        "kombu, write+flush+ack per message": lambda: kombu_per_message_ack(queue, count),
        "bridged format=raw": lambda: run_bridged(queue, count, "raw"),
        "bridged format=json": lambda: run_bridged(queue, count, "json"),
        "bridged format=oslo": lambda: run_bridged(queue, count, "oslo"),
    }
    best: dict[str, float] = {}
    try:
        for _ in range(args.rounds):
            for name, run in contenders.items():
                fill_queue(queue, count, oslo=name.endswith("oslo"))
                rate = count / run()
                best[name] = max(best.get(name, 0.0), rate)
                print(f"  {name:40s} {rate:9.0f} msg/s", flush=True)
    finally:
        delete_queue(queue)
    top = best["ceiling (py-amqp, no ack, no write)"]
    kombu = best["kombu, write+flush+ack per message"]
    print(f"\n{count} persistent ~600-byte messages, best of {args.rounds} round(s)")
    print(f"{'contender':40s} {'msg/s':>9s} {'x ceiling':>10s} {'x kombu':>8s}")
    for name, rate in best.items():
        print(f"{name:40s} {rate:9.0f} {rate / top:10.2f} {rate / kombu:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
