"""Publish-to-file latency at a steady rate: bridged against a write-and-ack-per-message consumer.

A publisher sends --rate msg/s for --seconds, each body carrying its send
time; a reader tails the output file and notes when each line appears. The
baseline is a bare py-amqp consumer that writes and acks every message at
once (no batching: the lowest latency one can get). Both run in this one
invocation, one after the other.

    python bench/latency.py [--rate 1000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import amqp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import URL, connect, delete_queue


def publish_steadily(queue: str, rate: int, seconds: float) -> int:
    conn = connect()
    channel = conn.channel()
    total = int(rate * seconds)
    start = time.monotonic()
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = f'{{"seq": {i}, "sent": {time.time():.6f}, "pad": "{"x" * 540}"}}'.encode()
        channel.basic_publish(amqp.Message(body, delivery_mode=2), exchange="", routing_key=queue)
    conn.close()
    return total


def tail_latencies(path: Path, total: int, done: threading.Event, out: list[float]) -> None:
    """Poll the file every millisecond; latency = time the line is seen - time it was sent."""
    offset, partial = 0, b""
    deadline = None
    while len(out) < total:
        if done.is_set():
            deadline = deadline or time.monotonic() + 30
            if time.monotonic() > deadline:
                return
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        now = time.time()
        offset += len(data)
        *lines, partial = (partial + data).split(b"\n")
        for line in lines:
            sent = float(line.split(b'"sent": ')[1].split(b",")[0])
            out.append(now - sent)
        time.sleep(0.001)


def measure(queue: str, start_consumer, rate: int, seconds: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.log"
        stop = start_consumer(path)
        try:
            latencies: list[float] = []
            done = threading.Event()
            total = int(rate * seconds)
            reader = threading.Thread(target=tail_latencies, args=(path, total, done, latencies))
            reader.start()
            publish_steadily(queue, rate, seconds)
            done.set()
            reader.join()
            return latencies
        finally:
            stop()


def start_bridged(queue: str, sink: dict | None = None):
    """A bridged on *queue* writing to the measured file; *sink* adds settings to its file sink (fsync)."""

    def start(path: Path):
        config = {
            "broker": {"url": URL},
            "sinks": {"f": {"type": "file", "path": str(path), **(sink or {})}},
            "bindings": {"lat": {"exchange": "amq.direct", "exchange_type": "direct", "routing_keys": [queue],
                                 "queue": queue, "sink": "f"}},
        }  # fmt: skip
        config_path = path.with_suffix(".yaml")
        config_path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(config_path),
                                 "--log-level", "warning"])  # fmt: skip
        time.sleep(2)  # connect and subscribe

        def stop() -> None:
            proc.terminate()
            proc.wait(30)

        return stop

    return start


def start_per_message_consumer(queue: str):
    def start(path: Path):
        stopping = threading.Event()

        def run() -> None:
            conn = connect()
            channel = conn.channel()
            channel.basic_qos(0, 1000, False)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

            def on_message(message: amqp.Message) -> None:
                os.write(fd, message.body + b"\n")
                channel.basic_ack(message.delivery_tag)

            channel.basic_consume(queue, callback=on_message)
            while not stopping.is_set():
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
            conn.close()
            os.close(fd)

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(1)

        def stop() -> None:
            stopping.set()
            thread.join(10)

        return stop

    return start


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    queue = f"bridged.bench.latency.{os.getpid()}"
    conn = connect()
    conn.channel().queue_declare(queue, durable=True, auto_delete=False)
    conn.close()
    results = {}
    try:
        for name, starter in (("per-message write+ack (baseline)", start_per_message_consumer(queue)),
                              ("bridged format=raw, file sink", start_bridged(queue))):  # fmt: skip
            results[name] = measure(queue, starter, args.rate, args.seconds)
    finally:
        delete_queue(queue)
    expected = int(args.rate * args.seconds)
    print(f"\n{args.rate} msg/s for {args.seconds:g} s, publish-to-file latency in ms")
    print(f"{'consumer':36s} {'lines':>6s} {'p50':>6s} {'p90':>6s} {'p99':>6s} {'max':>6s}")
    for name, values in results.items():
        p = {q: percentile(values, q) * 1000 for q in (50, 90, 99, 100)}
        print(f"{name:36s} {len(values):6d} {p[50]:6.1f} {p[90]:6.1f} {p[99]:6.1f} {p[100]:6.1f}")
    base, ours = results.values()
    print(f"\nbridged p99 / baseline p99 = {percentile(ours, 99) / percentile(base, 99):.2f}"
          f"  (lines expected: {expected})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
