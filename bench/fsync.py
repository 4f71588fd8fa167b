"""The cost of `fsync: true`: throughput and steady-rate latency, against the same file sink without it.

Throughput: bridged drains a pre-filled queue of --count persistent
~600-byte messages into a file, with and without fsync, alternating rounds
(best of --rounds each). Latency: publish-to-line at a steady --rate msg/s
for --seconds, each way. A batch is synced once (fdatasync) whatever its
size, so the cost per message falls as batches grow; at a steady low rate
each small batch pays one sync. Figures depend on the disk: this is the
disk of the machine it runs on.

    python bench/fsync.py [--count 50000] [--rounds 3] [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, connect, delete_queue, fill_queue, run_bridged
from latency import measure, percentile, start_bridged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    queue = f"bridged.bench.fsync.{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="bridged-fsync-", dir=os.environ.get("BENCH_DIR")))

    def drain(fsync: bool):
        def run(stats: dict[str, float]) -> float:
            fill_queue(queue, args.count)
            out = tmp / f"out-{fsync}.log"
            sink = {"type": "file", "path": str(out), "fsync": fsync}
            seconds = run_bridged(queue, args.count, "raw", stats=stats, sink=sink, output=out)
            out.unlink()
            return args.count / seconds

        return run

    try:
        rate, cpu = alternate(args.rounds, {False: drain(False), True: drain(True)},
                              label=lambda fsync: f"fsync {'on' if fsync else 'off'}")  # fmt: skip
        conn = connect()
        conn.channel().queue_declare(queue, durable=True, auto_delete=False)
        conn.close()
        latency = {fsync: measure(queue, start_bridged(queue, {"fsync": fsync}), args.rate, args.seconds)
                   for fsync in (False, True)}  # fmt: skip
    finally:
        delete_queue(queue)
    print(f"\nfile sink on {tmp} ({os.statvfs(tmp).f_bsize}-byte blocks), format raw, default batch size")
    print(f"{'':10s} {'msg/s':>8s} {'CPU us/msg':>11s} {'p50 ms':>7s} {'p99 ms':>7s}  (latency at {args.rate} msg/s)")
    for fsync in (False, True):
        lat = latency[fsync]
        print(f"fsync {'on ' if fsync else 'off'}  {rate[fsync]:8.0f} {cpu[fsync]:11.1f} "
              f"{percentile(lat, 50) * 1000:7.1f} {percentile(lat, 99) * 1000:7.1f}")  # fmt: skip
    print(f"\nfsync on / off: throughput {rate[True] / rate[False]:.2f}, "
          f"p99 latency {percentile(latency[True], 99) / percentile(latency[False], 99):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
