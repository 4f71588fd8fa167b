"""Soak: ten minutes at a steady rate with a broker restart in the middle; nothing lost, nothing grows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.conftest import base_config, rabbitmqctl, read_lines, wait_until
from tests.integration.reliability import StreamPublisher, record, wait_all_written

SOAK_SECONDS = float(os.environ.get("BRIDGED_SOAK_SECONDS", "600"))
RATE = 200  # msg/s: a busy OpenStack region's notification rate, sustained


def _process_figures(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


@pytest.mark.slow
def test_soak_with_a_broker_restart(broker, start_bridged, uid, tmp_path):
    """RSS at the end within 10 % of RSS after warm-up; no thread or descriptor growth; lost 0."""
    exchange, queue = f"test.soak.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    broker.declare_exchange(exchange, "fanout")
    out = tmp_path / "out.log"
    config = base_config(
        {"f": {"type": "file", "path": str(out)}},
        {"b": {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sink": "f", "format": "json"}},
    )
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    publisher = StreamPublisher(exchange, "", int(RATE * SOAK_SECONDS), uid, rate=RATE)
    started = time.monotonic()
    publisher.start()
    warm_up = min(60.0, SOAK_SECONDS / 10)
    time.sleep(warm_up)
    warm = _process_figures(bridged.proc.pid)
    time.sleep(max(0.0, SOAK_SECONDS / 2 - (time.monotonic() - started)))
    try:
        rabbitmqctl("stop_app")
        time.sleep(3)
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    bridged.wait_event("consuming", count=2, timeout=60)
    publisher.join(SOAK_SECONDS + 120)
    figures = wait_all_written(publisher.confirmed, [out], 120)
    wait_until(lambda: len(read_lines(out)) >= len(publisher.confirmed), 60, "the tail of the stream")
    time.sleep(2)
    end = _process_figures(bridged.proc.pid)
    record(f"soak {SOAK_SECONDS:g} s at {RATE} msg/s with a broker restart", **figures,
           rss_warm_kb=warm["rss_kb"], rss_end_kb=end["rss_kb"], threads=(warm["threads"], end["threads"]),
           fds=(warm["fds"], end["fds"]))  # fmt: skip
    assert figures["lost"] == 0
    assert end["rss_kb"] <= warm["rss_kb"] * 1.10, (warm, end)
    assert end["threads"] <= warm["threads"], (warm, end)
    assert end["fds"] <= warm["fds"], (warm, end)
    assert bridged.proc.poll() is None
