"""Throughput on one pre-filled queue: bridged against a compiled Go consumer (the ceiling), py-amqp and kombu.

Each contender drains the same --count persistent ~600-byte JSON messages
(oslo 2.0 notifications for the oslo format) from a durable queue, in turn,
best of --rounds, in one run. The ceiling is a Go consumer on amqp091-go
(bench/go/consumer.go, built offline from Debian's golang-go and
golang-github-rabbitmq-amqp091-go-dev) that writes nothing: with no acks,
and acking in batches of 256 under prefetch 1000 as bridged does; ratios
are to the batch-acking one. bridged runs as a real `bridged --config`
process with redaction on (the default), writing to a file sink; its CPU
time per message is printed too (steadier than msg/s on a shared machine).

    python bench/throughput.py [--count 100000] [--rounds 1] [--compare-with DIR]

--compare-with DIR adds bridged contenders run from another checkout (e.g.
`git worktree add /tmp/before HEAD~3`): a redesign measured before and after
in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import URL, connect, delete_queue, fill_queue, run_bridged
from kombu import Connection, Consumer, Queue

from bridged.amqpio import FAST_PATH_ENV

GO_SOURCE = Path(__file__).resolve().parent / "go" / "consumer.go"
GOPATH = "/usr/share/gocode"  # where Debian's golang-github-rabbitmq-amqp091-go-dev puts the library


def build_go_consumer(directory: Path) -> Path | None:
    """Build bench/go/consumer.go offline; None (with the reason) when Go or amqp091-go is missing."""
    if shutil.which("go") is None or not Path(GOPATH, "src/github.com/rabbitmq/amqp091-go").is_dir():
        print("no Go ceiling: apt-get install golang-go golang-github-rabbitmq-amqp091-go-dev", file=sys.stderr)
        return None
    binary = directory / "consumer"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOCACHE": str(directory / "cache"),
           "GOFLAGS": "", "GOPROXY": "off"}  # fmt: skip
    subprocess.run(["go", "build", "-o", str(binary), str(GO_SOURCE)], env=env, check=True, timeout=300)
    return binary


def go_consumer(binary: Path, queue: str, count: int, ack_batch: int) -> float:
    """Seconds the compiled consumer took to drain *count* messages."""
    command = [str(binary), "--url", URL.removesuffix("/"), "--queue", queue, "--count", str(count),
               "--ack-batch", str(ack_batch)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return float(json.loads(out.stdout)["seconds"])


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


GO_NO_ACK = "Go amqp091, no ack, no write"
GO_BATCH = "Go amqp091, ack per 256, no write"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1, help="repeat and keep each contender's best")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="also run the bridged of this checkout (before/after a change, in one run)",
    )
    args = parser.parse_args()
    count = args.count
    queue = f"bridged.bench.{os.getpid()}"
    build_dir = Path(tempfile.mkdtemp(prefix="bridged-bench-go-"))
    binary = build_go_consumer(build_dir)
    cpu: dict[str, float] = {}

    def bridged(fmt: str, name: str, env: dict[str, str] | None = None, source: Path | None = None
                ) -> Callable[[], float]:  # fmt: skip
        def run() -> float:
            stats: dict[str, float] = {}
            seconds = run_bridged(queue, count, fmt, stats=stats, env=env, source=source)
            cpu[name] = min(cpu.get(name, float("inf")), stats["cpu_us"])
            return seconds

        return run

    contenders: dict[str, Callable[[], float]] = {}
    if binary is not None:
        contenders[GO_NO_ACK] = lambda: go_consumer(binary, queue, count, 0)
        contenders[GO_BATCH] = lambda: go_consumer(binary, queue, count, 256)
    contenders.update({
        "py-amqp, no ack, no write": lambda: ceiling(queue, count),
        "kombu, write+flush+ack per message": lambda: kombu_per_message_ack(queue, count),
        "bridged format=raw": bridged("raw", "bridged format=raw"),
        "bridged format=json": bridged("json", "bridged format=json"),
        "bridged format=oslo": bridged("oslo", "bridged format=oslo"),
        # the public drain_events() path bridged falls back to if py-amqp's internals change
        "bridged raw, drain_events fallback": bridged("raw", "bridged raw, drain_events fallback",
                                                      {FAST_PATH_ENV: "0"}),
    })  # fmt: skip
    if args.compare_with is not None:
        other = args.compare_with.resolve()
        for fmt in ("raw", "json", "oslo"):
            name = f"{other.name} format={fmt}"
            contenders[name] = bridged(fmt, name, source=other)
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
        shutil.rmtree(build_dir, ignore_errors=True)
    top_name = GO_BATCH if GO_BATCH in best else "py-amqp, no ack, no write"
    top = best[top_name]
    print(f"\n{count} persistent ~600-byte messages, best of {args.rounds} round(s); ceiling: {top_name}")
    print(f"{'contender':40s} {'msg/s':>9s} {'x ceiling':>10s} {'CPU us/msg':>11s}")
    for name, rate in best.items():
        us = f"{cpu[name]:11.1f}" if name in cpu else f"{'':11s}"
        print(f"{name:40s} {rate:9.0f} {rate / top:10.2f} {us}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
