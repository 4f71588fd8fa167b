"""Throughput while the metrics port is flooded: 2,000 idle and slowloris clients against none, in one run.

bridged drains a pre-filled queue of --count persistent ~600-byte messages
with its metrics endpoint on; in alternate rounds a flood of clients holds
the endpoint's port (connecting again whenever dropped). The ratio is
flooded / quiet throughput, best of --rounds each.

    python bench/metrics_flood.py [--count 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import alternate, delete_queue, fill_queue, run_bridged

from tests.integration.servers import Flood


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    queue = f"bridged.bench.flood.{os.getpid()}"

    def drain(flooded: bool):
        def run(stats: dict[str, float]) -> float:
            fill_queue(queue, args.count)
            port = free_port()
            flood = Flood(port, idle=1000, slow=1000) if flooded else None
            try:
                seconds = run_bridged(queue, args.count, "json", stats=stats,
                                      top={"metrics": {"listen": f"127.0.0.1:{port}"}})  # fmt: skip
            finally:
                if flood is not None:
                    flood.close()
            return args.count / seconds

        return run

    try:
        rate, cpu = alternate(args.rounds, {False: drain(False), True: drain(True)},
                              label=lambda flooded: "flooded" if flooded else "quiet")  # fmt: skip
    finally:
        delete_queue(queue)
    print(f"\n{args.count} messages, format json, metrics endpoint on; best of {args.rounds}")
    for flooded in (False, True):
        print(f"{'flooded' if flooded else 'quiet':8s} {rate[flooded]:8.0f} msg/s {cpu[flooded]:6.1f} us/msg")
    print(f"\nflooded / quiet throughput: {rate[True] / rate[False]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
