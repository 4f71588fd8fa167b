"""The metrics endpoint's cost: throughput with metrics on against off, in one run.

A real `bridged --config` drains the same pre-filled queue (100,000
persistent ~600-byte JSON messages, format json) with the endpoint off
(`metrics: {stats_interval: 0}`: no endpoint, no stats line, no queue-depth
polling) and on (`listen`, the stats line, the queue depth read every 5 s,
and a scraper fetching /metrics every second, as Prometheus would),
alternating, best of --rounds for each. Both count with plain integers: that
part is always on. Also prints bridged's CPU time per message.

    python bench/metrics.py [--count 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, delete_queue, fill_queue, run_bridged


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Scraper(threading.Thread):
    """Fetches /metrics once a second until stopped; counts successful scrapes."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stop = threading.Event()
        self.scrapes = 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                self.scrapes += 1
            except OSError:
                pass  # bridged not up yet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    queue = f"bridged.bench.metrics.{os.getpid()}"
    scrapes = 0

    def off(stats: dict[str, float]) -> float:
        fill_queue(queue, args.count)
        return args.count / run_bridged(queue, args.count, "json", stats=stats, top={"metrics": {"stats_interval": 0}})

    def on(stats: dict[str, float]) -> float:
        nonlocal scrapes
        fill_queue(queue, args.count)
        port = free_port()
        top = {"metrics": {"listen": f"127.0.0.1:{port}", "stats_interval": 60, "backlog_interval": 5}}
        scraper = Scraper(port)
        scraper.start()
        try:
            return args.count / run_bridged(queue, args.count, "json", stats=stats, top=top)
        finally:
            scraper.stop.set()
            scraper.join()
            scrapes += scraper.scrapes

    try:
        rate, cpu = alternate(args.rounds, {"off": off, "on": on}, lambda mode: f"metrics {mode}")
    finally:
        delete_queue(queue)
    print(f"\n{args.count} persistent ~600-byte messages, format json, best of {args.rounds} round(s)")
    print(f"metrics off: {rate['off']:9.0f} msg/s  {cpu['off']:5.1f} us/msg")
    print(f"metrics on:  {rate['on']:9.0f} msg/s  {cpu['on']:5.1f} us/msg  ({scrapes} scrapes during the runs)")
    print(f"on/off throughput: {rate['on'] / rate['off']:.3f}   off/on CPU per message: {cpu['off'] / cpu['on']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
