"""Idle cost: CPU and memory of bridged with N bindings and no traffic.

Starts a real `bridged --config` with --bindings bindings (default 20), waits
until all consume, then reads the process's CPU time and RSS from /proc over
--seconds. As a baseline in the same run: a python process that imports
bridged and sleeps (the interpreter's own floor).

    python bench/idle.py [--bindings 20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import URL, connect

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(proc: subprocess.Popen[bytes], seconds: float) -> tuple[float, float]:
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
    return 100 * (cpu1 - cpu0) / (t1 - t0), rss_mb(proc.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    tag = os.getpid()
    queues = [f"bridged.bench.idle.{tag}.{i}" for i in range(args.bindings)]
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "broker": {"url": URL, "heartbeat": 30},
            "sinks": {"f": {"type": "file", "path": f"{tmp}/out.log"}},
            "bindings": {f"b{i}": {"exchange": f"bridged.bench.idle.{tag}", "exchange_type": "topic",
                                   "routing_keys": [f"k{i}"], "queue": q, "sink": "f", "durable": False,
                                   "auto_delete": True}
                         for i, q in enumerate(queues)},
        }  # fmt: skip
        path = Path(tmp) / "bridged.yaml"
        path.write_text(yaml.safe_dump(config))
        log = Path(tmp) / "log"
        with open(log, "wb") as stderr:
            bridged = subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(path)], stderr=stderr)
            baseline = subprocess.Popen([sys.executable, "-c", "import bridged.supervisor, time; time.sleep(1e6)"])
            try:
                deadline = time.monotonic() + 60
                while log.read_text().count('"consuming"') < args.bindings:
                    if time.monotonic() > deadline:
                        raise RuntimeError("bindings did not all start")
                    time.sleep(0.2)
                time.sleep(2)
                cpu, rss = measure(bridged, args.seconds)
                base_cpu, base_rss = measure(baseline, 2)
            finally:
                bridged.terminate()
                baseline.terminate()
                bridged.wait(30)
                baseline.wait(10)
    conn = connect()
    conn.channel().exchange_delete(f"bridged.bench.idle.{tag}")
    conn.close()
    print(f"\n{args.bindings} idle bindings over {args.seconds:g} s")
    print(f"{'process':38s} {'CPU % of a core':>16s} {'RSS MB':>8s}")
    print(f"{'bridged':38s} {cpu:16.2f} {rss:8.1f}")
    print(f"{'python importing bridged (baseline)':38s} {base_cpu:16.2f} {base_rss:8.1f}")
    print(f"\nbridged RSS / baseline RSS = {rss / base_rss:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
