"""Throughput on one pre-filled queue: bridged against a C consumer that writes what it reads (the ceiling).

Each contender drains the same --count persistent ~600-byte JSON messages
(oslo 2.0 notifications for the oslo format) from a durable queue, in turn,
best of --rounds, in one run. The ceiling is the thinnest client there is:
a C consumer on rabbitmq-c (bench/c/consumer.c, built offline from Debian's
librabbitmq-dev) that acks in batches of 256 under prefetch 1000, as
bridged does, and writes every body and a newline to a file, one write()
per batch before its ack; ratios are to it. Beside it: the same C consumer
with no acks and writing nothing (what the broker can push), a Go consumer
on amqp091-go (bench/go/consumer.go, from Debian's golang-go and
golang-github-rabbitmq-amqp091-go-dev), bare py-amqp and kombu. bridged runs
as a real `bridged --config` process with redaction on (the default),
writing to a file sink; CPU time per message is printed for the processes
the bench starts (steadier than msg/s on a shared machine).

    python bench/throughput.py [--count 100000] [--rounds 1] [--compare-with DIR] [--only TEXT ...]

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
C_SOURCE = Path(__file__).resolve().parent / "c" / "consumer.c"
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


def build_c_consumer(directory: Path) -> Path:
    """Build bench/c/consumer.c with Debian's librabbitmq-dev (the ceiling: the bench needs it)."""
    if shutil.which("gcc") is None or not Path("/usr/include/amqp.h").exists():
        raise SystemExit("the C ceiling needs gcc and rabbitmq-c: apt-get install gcc librabbitmq-dev")
    binary = directory / "c-consumer"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(C_SOURCE), "-lrabbitmq"], check=True, timeout=300)
    return binary


def c_consumer(binary: Path, queue: str, count: int, ack_batch: int, write: bool,
               cpu: dict[str, float] | None = None, name: str = "") -> float:  # fmt: skip
    """Seconds the C consumer took to drain *count* messages (*write*: every body to a file); its CPU per
    message goes to *cpu*[*name*]."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(binary), "--queue", queue, "--count", str(count), "--ack-batch", str(ack_batch)]
        if write:
            command += ["--output", str(Path(tmp) / "out.log")]
        before = os.times()
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
        after = os.times()
    if cpu is not None:
        used = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        cpu[name] = min(cpu.get(name, float("inf")), used * 1e6 / count)
    return float(json.loads(out.stdout)["seconds"])


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


GO_BATCH = "Go amqp091, ack per 256, no write"
C_NO_ACK = "C rabbitmq-c, no ack, no write"
C_WRITER = "C rabbitmq-c, ack per 256, writes"


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
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the contenders whose name contains TEXT (repeatable; the ceiling always runs)",
    )
    args = parser.parse_args()
    count = args.count
    queue = f"bridged.bench.{os.getpid()}"
    build_dir = Path(tempfile.mkdtemp(prefix="bridged-bench-go-"))
    binary = build_go_consumer(build_dir)
    c_binary = build_c_consumer(build_dir)
    cpu: dict[str, float] = {}

    def bridged(fmt: str, name: str, env: dict[str, str] | None = None, source: Path | None = None
                ) -> Callable[[], float]:  # fmt: skip
        def run() -> float:
            stats: dict[str, float] = {}
            seconds = run_bridged(queue, count, fmt, stats=stats, env=env, source=source)
            cpu[name] = min(cpu.get(name, float("inf")), stats["cpu_us"])
            return seconds

        return run

    contenders: dict[str, Callable[[], float]] = {
        C_NO_ACK: lambda: c_consumer(c_binary, queue, count, 0, False, cpu, C_NO_ACK),
        C_WRITER: lambda: c_consumer(c_binary, queue, count, 256, True, cpu, C_WRITER),
    }
    if binary is not None:
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
    if args.only:
        contenders = {name: run for name, run in contenders.items()
                      if name == C_WRITER or any(text in name for text in args.only)}  # fmt: skip
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
    top = best[C_WRITER]
    print(f"\n{count} persistent ~600-byte messages, best of {args.rounds} round(s); ceiling: {C_WRITER}")
    print(f"{'contender':40s} {'msg/s':>9s} {'x C writer':>10s} {'CPU us/msg':>11s}")
    for name, rate in best.items():
        us = f"{cpu[name]:11.1f}" if name in cpu else f"{'':11s}"
        print(f"{name:40s} {rate:9.0f} {rate / top:10.2f} {us}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
