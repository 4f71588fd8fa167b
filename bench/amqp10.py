"""AMQP 1.0 against AMQP 0-9-1: the same bridged, the same RabbitMQ, the same pre-filled queue, in one run.

The queue (--count persistent ~600-byte JSON messages) is drained by a real
`bridged --config` reading it over AMQP 0-9-1 and then over AMQP 1.0
(RabbitMQ's rabbitmq_amqp1_0 plugin, address /amq/queue/<queue>, qpid-proton),
alternating, best of --rounds each; format --format, one file sink.

    python bench/amqp10.py [--count 50000] [--rounds 3] [--format raw] [--compare-with DIR]

--compare-with DIR adds the AMQP 1.0 source of another checkout (before and after a change, in one run).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, delete_queue, fill_queue, run_bridged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", default="raw")
    parser.add_argument("--compare-with", type=Path, metavar="DIR", help="also the AMQP 1.0 source of this checkout")
    args = parser.parse_args()
    queue = f"bridged.bench.amqp10.{os.getpid()}"

    def contender(amqp10: bool, source: Path | None = None) -> Callable[[dict[str, float]], float]:
        def run(stats: dict[str, float]) -> float:
            fill_queue(queue, args.count)
            return args.count / run_bridged(queue, args.count, args.format, stats=stats, amqp10=amqp10,
                                            source=source)  # fmt: skip

        return run

    labels = {"0-9-1": "AMQP 0-9-1 (py-amqp)", "1.0": "AMQP 1.0 (qpid-proton)"}
    contenders = {"0-9-1": contender(False), "1.0": contender(True)}
    if args.compare_with is not None:
        labels["other"] = f"AMQP 1.0, {args.compare_with.resolve().name}"
        contenders["other"] = contender(True, args.compare_with.resolve())
    try:
        rate, cpu = alternate(args.rounds, contenders, label=labels.get)  # type: ignore[arg-type]
    finally:
        delete_queue(queue)
    print(f"\n{args.count} persistent ~600-byte messages, format {args.format}, best of {args.rounds} round(s)")
    for key, label in labels.items():
        print(f"{label:32s} {rate[key]:9.0f} msg/s {cpu[key]:6.1f} us/msg")
    print(f"AMQP 1.0 / AMQP 0-9-1 throughput: {rate['1.0'] / rate['0-9-1']:.2f}   CPU: {cpu['0-9-1'] / cpu['1.0']:.2f}")
    if "other" in rate:
        print(
            f"AMQP 1.0, this tree / {labels['other']}: throughput {rate['1.0'] / rate['other']:.2f}   "
            f"CPU {cpu['other'] / cpu['1.0']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
