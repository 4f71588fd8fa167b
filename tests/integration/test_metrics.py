"""The metrics endpoint, the probes and the stats line, against real processes, a real broker and a real Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import base_config, rabbitmqctl, wait_lines, wait_until

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
REPO = Path(__file__).resolve().parents[2]
BACKLOG_INTERVAL = 0.5  # read the queue depth often, so the tests see it move


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    _, text = get(f"http://127.0.0.1:{port}/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(port: int, name: str, **labels: str) -> float | None:
    return samples(port).get((name, tuple(sorted(labels.items()))))


def start(broker, start_bridged, uid, tmp_path, sink_path: Path, **metrics):
    exchange, queue = f"test.metrics.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    port = free_port()
    binding = {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sink": "f", "prefetch": 20}
    config = base_config(
        {"f": {"type": "file", "path": str(sink_path)}},
        {"b": binding},
        metrics={"listen": f"127.0.0.1:{port}", "backlog_interval": BACKLOG_INTERVAL, **metrics},
    )
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    return bridged, exchange, queue, port


def test_metrics_count_what_flows_and_probes_answer(broker, start_bridged, uid, tmp_path):
    """50 messages: received, written, acked 50; consuming 1; both probes ok; promtool finds nothing to lint."""
    out = tmp_path / "out.log"
    bridged, exchange, queue, port = start(broker, start_bridged, uid, tmp_path, out)
    for i in range(50):
        broker.publish(exchange, "", f"m{i}".encode())
    wait_lines(out, 50)
    wait_until(lambda: value(port, "bridged_messages_acked_total", binding="b") == 50, 10, "acked = 50")
    assert value(port, "bridged_messages_received_total", binding="b") == 50
    assert value(port, "bridged_lines_written_total", binding="b", sink="f") == 50
    assert value(port, "bridged_binding_consuming", binding="b") == 1
    assert value(port, "bridged_unacked_messages", binding="b") == 0
    assert value(port, "bridged_batch_write_seconds_count", binding="b", sink="f") >= 1
    assert value(port, "bridged_last_message_timestamp_seconds", binding="b") > time.time() - 60
    wait_until(lambda: value(port, "bridged_queue_consumers", binding="b", queue=queue) == 1, 10, "queue consumers")
    assert value(port, "bridged_queue_messages_ready", binding="b", queue=queue) == 0
    assert any(name == "bridged_build_info" for name, _ in samples(port))
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ok\n")
    assert get(f"http://127.0.0.1:{port}/nope")[0] == 404
    if PROMTOOL or os.environ.get("CI"):
        assert PROMTOOL, "promtool is not installed (apt-get install prometheus)"
        _, text = get(f"http://127.0.0.1:{port}/metrics")
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    assert bridged.count("metrics_listening") == 1


def test_a_failing_sink_is_counted_backlog_grows_and_recovery_is_logged(broker, start_bridged, uid, tmp_path):
    """Sink down: failures by reason, unacked in hand, the queue's backlog; sink back: sink_recovered, backlog 0."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bridged, exchange, queue, port = start(broker, start_bridged, uid, tmp_path, blocker / "out.log")
    for i in range(200):
        broker.publish(exchange, "", f"m{i}".encode())
    bridged.wait_event("sink_failed")
    # makedirs meets a file where the directory should be: EEXIST
    wait_until(lambda: (value(port, "bridged_sink_failures_total", binding="b", sink="f", reason="EEXIST") or 0) >= 1,
               10, "a sink failure counted")  # fmt: skip
    wait_until(lambda: (value(port, "bridged_queue_messages_ready", binding="b", queue=queue) or 0) >= 150, 10,
               "the backlog")  # fmt: skip
    assert value(port, "bridged_unacked_messages", binding="b") == 20  # the prefetch window, held
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # a failing sink is not a dead process
    blocker.unlink()
    blocker.mkdir()
    wait_lines(blocker / "out.log", 200)
    bridged.wait_event("sink_recovered")
    wait_until(lambda: value(port, "bridged_queue_messages_ready", binding="b", queue=queue) == 0, 10, "backlog 0")
    assert value(port, "bridged_messages_acked_total", binding="b") == 200


def test_readiness_follows_the_broker_and_liveness_does_not(broker, start_bridged, uid, tmp_path):
    """stop_app: /readyz 503 naming the binding within 10 s, /healthz still 200; start_app: /readyz 200 again."""
    _bridged, _, _, port = start(broker, start_bridged, uid, tmp_path, tmp_path / "o.log")
    try:
        rabbitmqctl("stop_app")
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 10, "/readyz to fail")
        assert get(f"http://127.0.0.1:{port}/readyz") == (503, "not consuming: b\n")
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "/readyz back")
    assert (value(port, "bridged_reconnects_total", binding="b", reason="connection") or 0) >= 1


def test_stats_line_gives_counts_since_the_last_one(broker, start_bridged, uid, tmp_path):
    """stats_interval: 1 -> a `stats` line a second with that second's counts, the backlog and what is in hand."""
    out = tmp_path / "o.log"
    bridged, exchange, _, _ = start(broker, start_bridged, uid, tmp_path, out, stats_interval=1)
    for i in range(30):
        broker.publish(exchange, "", f"m{i}".encode())
    wait_lines(out, 30)
    wait_until(lambda: sum(e["bindings"]["b"]["acked"] for e in bridged.events() if e["event"] == "stats") == 30, 10,
               "30 acked in the stats lines")  # fmt: skip
    lines = [e for e in bridged.events() if e["event"] == "stats"]
    assert sum(e["bindings"]["b"]["received"] for e in lines) == 30
    assert all(e["bindings"]["b"]["acked"] <= 30 for e in lines)  # deltas, not totals
    assert lines[-1]["bindings"]["b"]["backlog"] == 0


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    yield port, config
    # (the process is started by the test once bridged's port is known; stopped there)


def query(prom_port: int, expression: str) -> float | None:
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        status, body = get(url)
    except urllib.error.URLError:  # Prometheus is still starting
        return None
    if status != 200:
        return None
    result = json.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_a_real_prometheus_scrapes_what_flows(broker, start_bridged, uid, tmp_path, prometheus):
    """Prometheus scrapes bridged every second: acked equals what was published; the backlog rises and falls."""
    prom_port, prom_config = prometheus
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    _bridged, exchange, queue, port = start(broker, start_bridged, uid, tmp_path, blocker / "out.log")
    prom_config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: bridged, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]\n"
    )
    assert PROMETHEUS is not None
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: query(prom_port, 'up{job="bridged"}') == 1, 60, "Prometheus to scrape bridged")
        for i in range(300):
            broker.publish(exchange, "", f"m{i}".encode())
        backlog = f'bridged_queue_messages_ready{{binding="b",queue="{queue}"}}'
        wait_until(lambda: (query(prom_port, backlog) or 0) >= 200, 30, "the backlog, seen by Prometheus")
        failures = 'sum(bridged_sink_failures_total{binding="b"})'
        wait_until(lambda: (query(prom_port, failures) or 0) >= 1, 30, "sink failures, seen by Prometheus")
        blocker.unlink()
        blocker.mkdir()
        wait_lines(blocker / "out.log", 300)
        acked = 'bridged_messages_acked_total{binding="b"}'
        wait_until(lambda: query(prom_port, acked) == 300, 30, "acked = 300 in Prometheus")
        wait_until(lambda: query(prom_port, backlog) == 0, 30, "the backlog back to 0 in Prometheus")
        written = 'bridged_lines_written_total{binding="b",sink="f"}'
        assert query(prom_port, written) == 300
        assert query(prom_port, f"max_over_time({backlog}[1m])") >= 200
    finally:
        proc.terminate()
        proc.wait(30)


def _process_counts(pid: int) -> tuple[int, int]:
    """(open descriptors, threads) of process *pid*."""
    threads = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("Threads:"))
    return len(os.listdir(f"/proc/{pid}/fd")), threads


def test_a_flood_on_the_metrics_port_takes_nothing_from_the_bridge(broker, start_bridged, uid, tmp_path):
    """2,000 idle and slowloris clients (reconnecting when dropped) while messages flow: every message written,
    descriptors and threads bounded, /healthz answering every time (well within the server's request deadline;
    bench/metrics_flood.py measures what the flood costs the throughput)."""
    import resource

    from bridged.httpserver import MAX_CONNECTIONS, REQUEST_TIMEOUT
    from tests.integration.conftest import fanout_binding
    from tests.integration.reliability import StreamPublisher
    from tests.integration.servers import Flood

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # our 2,000 clients
    port = free_port()
    exchange, _, binding = fanout_binding(broker, uid, sink="f")
    out = tmp_path / "out.log"
    config = base_config({"f": {"type": "file", "path": str(out)}}, {"b": binding},
                         metrics={"listen": f"127.0.0.1:{port}"})  # fmt: skip
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    before = _process_counts(bridged.proc.pid)
    flood = Flood(port, idle=1000, slow=1000)
    publisher = StreamPublisher(exchange, "", 3000, prefix=uid, rate=300)
    publisher.start()
    try:
        worst_health, counts = 0.0, []
        while publisher.is_alive():
            started = time.monotonic()
            status, _ = get(f"http://127.0.0.1:{port}/healthz")
            worst_health = max(worst_health, time.monotonic() - started)
            assert status == 200
            counts.append(_process_counts(bridged.proc.pid))
            time.sleep(0.5)
    finally:
        publisher.join(60)
        flood.close()
    wait_until(lambda: set(publisher.confirmed) <= set(wait_lines(out, 0)), 60, "every message written")
    most_fds, most_threads = max(c[0] for c in counts), max(c[1] for c in counts)
    print(f"\nflood: {flood.reconnects} client connects; bridged's descriptors {before[0]} -> at most {most_fds}, "
          f"threads {before[1]} -> at most {most_threads}; slowest /healthz {worst_health:.3f} s")  # fmt: skip
    assert most_fds <= before[0] + MAX_CONNECTIONS + 2
    assert most_threads <= before[1]
    assert worst_health < REQUEST_TIMEOUT
