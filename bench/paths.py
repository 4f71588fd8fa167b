"""A path template's cost: 50 distinct files from {event_type} against one fixed file, in one run.

The same pre-filled queue (100,000 persistent oslo notifications, 50
distinct event types, format oslo) is drained by a real `bridged --config`
writing to one file, then to `{event_type}.log` (50 files, all open at
once), alternating, best of --rounds for each.

    python bench/paths.py [--count 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, delete_queue, fill_queue, run_bridged

EVENT_TYPES = 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    queue = f"bridged.bench.paths.{os.getpid()}"
    modes = {"one fixed file": None, f"{{event_type}}.log, {EVENT_TYPES} files": "{event_type}.log"}

    def contender(template: str | None) -> Callable[[dict[str, float]], float]:
        def run(stats: dict[str, float]) -> float:
            fill_queue(queue, args.count, oslo=True, event_types=EVENT_TYPES)
            return args.count / run_bridged(queue, args.count, "oslo", stats=stats, path_template=template)

        return run

    try:
        rate, cpu = alternate(args.rounds, {mode: contender(template) for mode, template in modes.items()})
    finally:
        delete_queue(queue)
    fixed, templated = modes
    print(f"\n{args.count} persistent oslo notifications, {EVENT_TYPES} event types, best of {args.rounds} round(s)")
    for mode in modes:
        print(f"{mode:32s} {rate[mode]:9.0f} msg/s {cpu[mode]:6.1f} us/msg")
    print(f"template / fixed throughput: {rate[templated] / rate[fixed]:.2f}   CPU: {cpu[fixed] / cpu[templated]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
