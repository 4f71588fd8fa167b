"""Prefetch and batch_size: bridged's throughput for each pair, as a ratio of the no-ack ceiling.

python bench/tuning.py [--count 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import delete_queue, fill_queue, run_bridged
from throughput import ceiling

GRID = [(100, 32), (100, 100), (1000, 64), (1000, 256), (1000, 1000), (5000, 256), (5000, 1024)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    args = parser.parse_args()
    queue = f"bridged.bench.tuning.{os.getpid()}"
    try:
        fill_queue(queue, args.count)
        top = args.count / ceiling(queue, args.count)
        print(f"ceiling {top:.0f} msg/s")
        rows = []
        for prefetch, batch in GRID:
            fill_queue(queue, args.count)
            rate = args.count / run_bridged(queue, args.count, "raw", {"prefetch": prefetch, "batch_size": batch})
            rows.append((prefetch, batch, rate))
            print(f"  prefetch {prefetch:5d} batch_size {batch:5d}: {rate:7.0f} msg/s = {rate / top:.2f} x ceiling",
                  flush=True)  # fmt: skip
    finally:
        delete_queue(queue)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
