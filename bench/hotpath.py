"""Where a message's CPU goes inside bridged: the read path measured in-process, without a broker.

Pre-built basic.deliver frames (the ~600-byte notifications of the other
benches, oslo 2.0 envelopes for `oslo`) are handed to amqpio.DeliveryReader
through py-amqp's read buffer, as the socket would hand them, about 90 a
read; a real BindingWorker takes each delivery, formats it and holds the
line (no sink: this measures the per-message path, not the writes). Each
contender runs in a child process and reports its thread CPU time per
message; the best of --rounds is kept. "reader" stops at the worker's door,
so the rows above it are what each step adds.

With --compare-with DIR the same contenders run from that checkout too, in
alternation, and the ratios after/before are printed: the before/after of a
change to the hot path in one run.

The whole process does more per message than this (recv(2), writes, acks:
bench/throughput.py measures that against a C client); on this machine it
also spends about twice the in-process CPU on the same steps.

    python bench/hotpath.py [--count 30000] [--rounds 5] [--compare-with DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
# contender -> (binding format, redaction on)
CONTENDERS: dict[str, tuple[str, bool]] = {
    "reader": ("raw", True),
    "raw": ("raw", True),
    "json": ("json", True),
    "json, redaction off": ("json", False),
    "oslo": ("oslo", True),
    "oslo, redaction off": ("oslo", False),
}
PER_READ = 90  # deliveries per read: 64 KiB of them, as DeliveryReader asks of recv(2)
CHANNEL = 1


def frames(tag: int, body: bytes, routing_key: str) -> bytes:
    """basic.deliver, its content header (delivery_mode 2) and one body frame, as RabbitMQ sends them."""
    from amqp.basic_message import Message
    from amqp.serialization import dumps

    def frame(kind: int, payload: bytes) -> bytes:
        return struct.pack(">BHI", kind, CHANNEL, len(payload)) + payload + b"\xce"

    args = dumps("sLbss", ["amq.ctag-bench", tag, False, "nova", routing_key])
    header = struct.pack(">HHQ", 60, 0, len(body)) + Message(delivery_mode=2)._serialize_properties()
    return frame(1, struct.pack(">HH", 60, 60) + args) + frame(2, header) + frame(3, body)


def child(name: str, count: int) -> float:
    """Thread CPU µs per message of one contender, in this process (run from the checkout under test)."""
    import yaml
    from amqp.transport import TCPTransport

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import notification

    from bridged.amqpio import DeliveryReader, enable_read_ahead
    from bridged.config import parse_config
    from bridged.sources.worker import BindingWorker

    fmt, redact = CONTENDERS[name]
    binding = {"exchange": "nova", "sinks": ["out"], "format": fmt, "redact": redact}
    config = parse_config(yaml.safe_dump({"sinks": {"out": {"type": "stdout"}}, "bindings": {"b": binding}}),
                          "hotpath.yaml", {})  # fmt: skip

    class NoSource:
        def connect_budget(self) -> float:
            return 10.0

    worker = BindingWorker(config.bindings["b"], config.broker, config.reconnect, [], NoSource())  # type: ignore[arg-type]
    messages = [frames(i + 1, notification(i % 256, fmt == "oslo"), "notifications.info") for i in range(count)]
    reads = [b"".join(messages[i : i + PER_READ]) for i in range(0, count, PER_READ)]
    ours, theirs = socket.socketpair()  # nothing is ever sent: each read ends at an empty socket, as live
    transport = TCPTransport("localhost:1")
    transport.sock = ours
    transport._setup_transport()
    if not enable_read_ahead(transport):
        raise SystemExit("py-amqp's internals changed: DeliveryReader is off")

    class Connection:
        bytes_recv = 0

        def __init__(self) -> None:
            self.transport = transport

        def on_inbound_frame(self, frame: Any) -> None:
            raise AssertionError(f"not a whole delivery: {frame[:2]}")

    taken = 0
    take = worker._take

    def deliver(delivery: Any) -> bool:
        nonlocal taken
        taken += 1
        if name != "reader" and not take(delivery):
            worker._batch = worker._new_batch()  # as after a flush
        return True

    connection = Connection()
    from bridged.sources.amqp091 import Amqp091Session

    callback: Any = deliver
    if hasattr(Amqp091Session, "_on_parsed"):  # a checkout before fd7ccba: the reader called the session
        session = Amqp091Session.__new__(Amqp091Session)
        session._deliver = deliver
        callback = session._on_parsed
    reader = DeliveryReader(connection, CHANNEL, callback)
    started = time.thread_time()
    for data in reads:
        transport._read_buffer += data
        while transport._read_buffer:
            reader.read_frames(connection, 0)
    used = time.thread_time() - started
    ours.close()
    theirs.close()
    if taken != count:
        raise SystemExit(f"{name}: {taken} of {count} deliveries")
    return used / count * 1e6


def run_child(tree: Path, name: str, count: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(tree), os.environ.get("PYTHONPATH")))))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", name, "--count", str(count)],
                         cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=600)  # fmt: skip
    return float(json.loads(out.stdout)["us"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5, help="repeat and keep each contender's best")
    parser.add_argument("--compare-with", type=Path, metavar="DIR", help="also run this checkout's bridged")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"us": child(args.child, args.count)}))
        return 0
    trees = {"this": CHECKOUT}
    if args.compare_with is not None:
        trees["before"] = args.compare_with.resolve()
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for name in CONTENDERS:
            for label, tree in trees.items():  # alternating: the machine's drift hits both alike
                us = run_child(tree, name, args.count)
                best[label, name] = min(best.get((label, name), float("inf")), us)
    print(f"\n{args.count} deliveries of ~600 bytes, {PER_READ} a read; thread CPU µs/msg, best of {args.rounds}")
    header = f"{'contender':22s} {'this':>7s}"
    if "before" in trees:
        header += f" {'before':>7s} {'this/before':>11s}"
    print(header)
    for name in CONTENDERS:
        row = f"{name:22s} {best['this', name]:7.2f}"
        if "before" in trees:
            row += f" {best['before', name]:7.2f} {best['this', name] / best['before', name]:11.2f}"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
