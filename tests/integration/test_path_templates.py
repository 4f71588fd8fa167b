"""Path templates: a file per message field, never outside the base directory, nothing lost with many files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from tests.integration.conftest import base_config, queue_counts, wait_until

# <PRI>1 TIMESTAMP HOST APP PID MSGID - MSG: the notification's priority and event_type ride along
WITH_MSGID = re.compile(rb"<(\d+)>1 \S+ \S+ \S+ \d+ (\S+) - (.*)", re.S)


def oslo(event_type: str, priority: str, publisher_id: str = "compute.ctl1", n: int = 0) -> bytes:
    inner = {"event_type": event_type, "priority": priority, "publisher_id": publisher_id, "payload": {"n": n}}
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def _tree(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_paths_from_hostile_fields_stay_under_the_base(broker, start_bridged, uid, tmp_path):
    """publisher_id and event_type of '..', '/', NUL, control characters, 10,000 characters: all under the base."""
    exchange, queue = f"test.paths.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    base = tmp_path / "base"
    sink = {"type": "file", "path": f"{base}/logs/{{publisher_id}}/{{event_type}}.log"}
    binding = {"exchange": exchange, "queue": queue, "sink": "f", "format": "oslo"}
    bridged = start_bridged(base_config({"f": sink}, {"b": binding}))
    bridged.wait_event("consuming")
    hostile = ["..", ".", "../../../escape", "/etc/cron.d/x", "a\x00b", "\x1b[31m\n", "x" * 10_000, "", "ok"]
    for n, value in enumerate(hostile):
        broker.publish(exchange, "notifications.info", oslo(value, "INFO", publisher_id=value, n=n))
    wait_until(lambda: queue_counts(queue) == (0, 0), 30, "every message written and acked")
    outside = [f for f in _tree(tmp_path) if not str(f).startswith(f"{base}/logs/")]
    assert all(f.parent == tmp_path and f.name.startswith("bridged-") for f in outside), outside  # the test's own
    files = _tree(base)
    assert all(len(f.name) <= 64 + 4 and not f.name.startswith(".") for f in files)
    numbers = sorted(json.loads(line)["payload"]["n"] for f in files for line in f.read_text().splitlines())
    assert numbers == list(range(len(hostile)))


def test_more_paths_than_open_files_and_logrotate_lose_nothing(broker, start_bridged, uid, tmp_path):
    """40 event types through max_open_files: 4, with the real logrotate (create + HUP) twice mid-stream."""
    exchange, queue = f"test.lru.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    base = tmp_path / "logs"
    sink = {"type": "file", "path": f"{base}/{{event_type}}.log", "max_open_files": 4}
    binding = {"exchange": exchange, "queue": queue, "sink": "f", "format": "oslo", "batch_size": 20}
    bridged = start_bridged(base_config({"f": sink}, {"b": binding}))
    bridged.wait_event("consuming")
    rotate = tmp_path / "logrotate.conf"
    rotate.write_text(
        f"{base}/*.log {{\n  rotate 5\n  create 0640\n  missingok\n  nocompress\n  sharedscripts\n"
        f"  postrotate\n    kill -HUP {bridged.proc.pid}\n  endscript\n}}\n"
    )
    count = 2000
    for n in range(count):
        broker.publish(exchange, "notifications.info", oslo(f"event.{n % 40}", "INFO", n=n))
        if n in (700, 1400):
            subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(rotate)], check=True, timeout=60)
    wait_until(lambda: queue_counts(queue) == (0, 0), 60, "every message written and acked")
    time.sleep(0.5)
    seen = [json.loads(line)["payload"]["n"] for f in _tree(base) for line in f.read_text().splitlines()]
    assert sorted(seen) == list(range(count)), f"lost {count - len(set(seen))}, duplicated {len(seen) - len(set(seen))}"
    assert len(list(base.glob("*.log"))) == 40 and len(list(base.glob("*.log.1"))) >= 1
    fds = [os.readlink(f"/proc/{bridged.proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{bridged.proc.pid}/fd")]
    # at most 4 files open (beside them, the base directory: files are opened below it, never through a link)
    assert sum(1 for target in fds if target.startswith(f"{base}/")) <= 4


def test_links_planted_under_the_base_never_lead_outside_and_hold_nothing_up(broker, start_bridged, uid, tmp_path):
    """A link as a file, a dangling one, a linked directory, one swapped in while bridged runs, and a 300-byte
    name: nothing outside the base written or created; those lines go to the fallback; the others land."""
    exchange, queue = f"test.paths.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    base, outside = tmp_path / "logs", tmp_path / "victim"
    base.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched\n")
    (base / "nova").mkdir()
    (base / "nova" / f"x-r-{exchange}.log").symlink_to(outside / "victim.txt")
    (base / "glance").mkdir()
    (base / "glance" / f"x-r-{exchange}.log").symlink_to(outside / "created.log")  # dangling
    (base / "cinder").symlink_to(outside, target_is_directory=True)
    sink = {"type": "file", "path": f"{base}/{{publisher_id}}/{{event_type}}-{{routing_key}}-{{exchange}}.log"}
    binding = {"exchange": exchange, "queue": queue, "sink": "f", "format": "oslo"}
    bridged = start_bridged(base_config({"f": sink}, {"b": binding}))
    bridged.wait_event("consuming")
    long_key = "k" * 64
    sent = [("nova", "x"), ("glance", "x"), ("cinder", "x"), ("heat", "x"), ("neutron", "e" * 64)]
    for n, (publisher, event_type) in enumerate(sent):
        key = long_key if publisher == "neutron" else "r"
        broker.publish(exchange, key, oslo(event_type, "INFO", publisher_id=publisher, n=n))
    wait_until(lambda: queue_counts(queue) == (0, 0), 30, "every message written and acked")
    heat = base / "heat" / f"x-r-{exchange}.log"
    (base / "heat" / "planted-target.log").write_text("")
    heat.unlink()
    heat.symlink_to(outside / "victim.txt")  # swapped in while bridged runs
    broker.publish(exchange, "r", oslo("x", "INFO", publisher_id="heat", n=len(sent)))
    wait_until(lambda: queue_counts(queue) == (0, 0), 30, "the message after the swap written and acked")
    time.sleep(0.5)
    assert (outside / "victim.txt").read_text() == "untouched\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    unfiled = sorted(json.loads(line)["payload"]["n"] for line in (base / "_unfiled.log").read_text().splitlines())
    assert unfiled == [0, 1, 2, len(sent)]
    (long_name,) = [p for p in (base / "neutron").iterdir()]
    assert len(long_name.name.encode()) <= 255 and long_name.name.endswith(".log")
    assert bridged.count("path_unusable") == 4 and bridged.count("sink_failed") == 0
