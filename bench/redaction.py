"""Redaction's cost: json and oslo throughput with redaction on against off, in one run.

OpenStack-shaped notifications (oslo 2.0 envelope, ~1 KB with the request
context) fill one durable queue; a real `bridged --config` drains it with
`redact: false` and with the default (on), for each format, alternating, and
the best of --rounds is kept for each. Two kinds of traffic: a modern
publisher that masks the token itself (the common case: nothing to rewrite)
and an older one that sends it live (every message rewritten). Besides msg/s
it prints bridged's CPU time per message, which is steadier on a shared
machine, and the formatter's own CPU time per message, measured in-process.

    python bench/redaction.py [--count 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import LIVE_CONTEXT, MASKED_CONTEXT, alternate, delete_queue, fill_queue, notification, run_bridged

from bridged.delivery import Delivery
from bridged.formats import make_formatter
from bridged.redact import DEFAULT_REDACT_KEYS, Redactor

TRAFFIC = {"token masked by publisher": MASKED_CONTEXT, "live token (older oslo)": LIVE_CONTEXT}
FORMATS = ("json", "oslo")


def delivery(body: bytes) -> Delivery:
    return Delivery(body, "nova", "notifications.info", False, 1, {"delivery_mode": 2})


def formatter_us(fmt: str, redact: bool, context: dict, n: int = 20_000) -> float:
    """Microseconds of CPU per message for the formatter alone."""
    formatter = make_formatter(fmt, "bench", Redactor(DEFAULT_REDACT_KEYS) if redact else None)
    deliveries = [delivery(notification(i, oslo=True, context=context)) for i in range(256)]
    started = time.process_time()
    for i in range(n):
        formatter(deliveries[i & 255])
    return (time.process_time() - started) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternate off/on this many times, keep the best")
    args = parser.parse_args()
    count = args.count
    queue = f"bridged.bench.redact.{os.getpid()}"

    def contender(context: dict, fmt: str, redact: bool) -> Callable[[dict[str, float]], float]:
        def run(stats: dict[str, float]) -> float:
            fill_queue(queue, count, oslo=True, context=context)
            return count / run_bridged(queue, count, fmt, extra={"redact": redact}, stats=stats)

        return run

    contenders = {(kind, fmt, redact): contender(context, fmt, redact)
                  for kind, context in TRAFFIC.items() for fmt in FORMATS for redact in (False, True)}  # fmt: skip
    try:
        rate, cpu = alternate(args.rounds, contenders, lambda k: f"{k[0]} {k[1]} redact={'on' if k[2] else 'off'}")
    finally:
        delete_queue(queue)
    print(f"\n{count} persistent oslo notifications per run, best of {args.rounds} round(s)")
    print(f"{'traffic':26s} {'format':6s} {'off msg/s':>10s} {'on msg/s':>9s} {'on/off':>7s}"
          f" {'off us':>7s} {'on us':>6s} {'off/on':>7s} {'fmt off us':>10s} {'fmt on us':>9s}")  # fmt: skip
    for kind, context in TRAFFIC.items():
        for fmt in FORMATS:
            off, on = (kind, fmt, False), (kind, fmt, True)
            print(f"{kind:26s} {fmt:6s} {rate[off]:10.0f} {rate[on]:9.0f} {rate[on] / rate[off]:7.2f}"
                  f" {cpu[off]:7.1f} {cpu[on]:6.1f} {cpu[off] / cpu[on]:7.2f}"
                  f" {formatter_us(fmt, False, context):10.1f} {formatter_us(fmt, True, context):9.1f}")  # fmt: skip
    print("on/off: msg/s with redaction over without; off/on: bridged's CPU per message without over with")
    print("(1.00 = free, 0.90 = 10 % slower); fmt: the formatter alone, in-process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
