"""The RELP sink's throughput against the TCP syslog sink, both into the same real rsyslogd, in one run.

The same pre-filled queue (--count persistent ~600-byte JSON messages,
format raw) is drained by a real `bridged --config` whose one sink is RELP
(imrelp: every message answered) and then plain TCP syslog (imtcp, octet
counting: nothing answered), alternating, best of --rounds each. rsyslogd
is ours (tests/integration/servers.py), started fresh for every run, with a
Direct queue: a RELP answer means the line is in rsyslog's file.

    python bench/relp.py [--count 50000] [--rounds 3] [--window 128]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' rsyslogd helper

from common import alternate, delete_queue, fill_queue, run_bridged

from tests.integration.servers import Rsyslog


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=128, help="the RELP sink's window")
    args = parser.parse_args()
    queue = f"bridged.bench.relp.{os.getpid()}"

    def contender(kind: str) -> Callable[[dict[str, float]], float]:
        def run(stats: dict[str, float]) -> float:
            fill_queue(queue, args.count)
            with tempfile.TemporaryDirectory() as tmp:
                rsyslog = Rsyslog(Path(tmp), ("relp", "tcp"))
                try:
                    if kind == "relp":
                        sink = {"type": "relp", "address": f"tcp://127.0.0.1:{rsyslog.relp_port}",
                                "window": args.window}  # fmt: skip
                    else:
                        sink = {"type": "syslog", "address": f"tcp://127.0.0.1:{rsyslog.tcp_port}"}
                    seconds = run_bridged(queue, args.count, "raw", stats=stats, sink=sink, output=rsyslog.output)
                finally:
                    rsyslog.stop()
            return args.count / seconds

        return run

    try:
        rate, cpu = alternate(args.rounds, {kind: contender(kind) for kind in ("tcp", "relp")})
    finally:
        delete_queue(queue)
    print(f"\n{args.count} persistent ~600-byte messages into one rsyslogd (imrelp and imtcp, Direct queue), "
          f"RELP window {args.window}, best of {args.rounds} round(s)")  # fmt: skip
    for kind, label in (("tcp", "TCP syslog (octet counting)"), ("relp", "RELP")):
        print(f"{label:32s} {rate[kind]:9.0f} msg/s {cpu[kind]:6.1f} us/msg (bridged's CPU)")
    print(f"RELP / TCP syslog throughput: {rate['relp'] / rate['tcp']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
