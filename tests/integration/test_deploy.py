"""Deployment: --daemon and pidfiles, sd_notify, SIGHUP reload, logrotate."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import base_config, fanout_binding, read_lines, wait_lines, wait_until
from tests.integration.servers import DatagramServer


def _binding(uid: str, name: str, sink: str, **extra: object) -> dict:
    return {"exchange": f"test.deploy.{uid}", "exchange_type": "direct", "routing_keys": [name],
            "queue": f"bridged.test.{uid}.{name}", "sink": sink, **extra}  # fmt: skip


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_daemon(config_path: Path, pidfile: Path, log_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridged", "--config", str(config_path), "--daemon",
         "--pidfile", str(pidfile), "--log-file", str(log_file)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_daemon_lifecycle(broker, uid, tmp_path):
    """--daemon detaches and returns 0 once running; a live pidfile refuses; a stale one is replaced; TERM cleans up."""
    out = tmp_path / "out.log"
    config = base_config({"f": {"type": "file", "path": str(out)}}, {"a": _binding(uid, "a", "f")})
    config_path = tmp_path / "bridged.yaml"
    config_path.write_text(yaml.safe_dump(config))
    pidfile, log_file = tmp_path / "bridged.pid", tmp_path / "bridged.log"
    broker.queues.add(f"bridged.test.{uid}.a")
    broker.exchanges.add(f"test.deploy.{uid}")

    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")  # stale: left by a process that no longer exists

    result = _run_daemon(config_path, pidfile, log_file)
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    try:
        assert pid != dead.pid and _pid_alive(pid)
        assert stat.S_IMODE(pidfile.stat().st_mode) == 0o640, "the pidfile is not world-readable"
        assert os.getsid(pid) != os.getsid(0), "the daemon left our session"
        wait_until(lambda: "consuming" in log_file.read_text(), 20, "the daemon to consume")
        broker.publish(f"test.deploy.{uid}", "a", b"from the daemon")
        assert wait_lines(out, 1) == ["from the daemon"]

        second = _run_daemon(config_path, pidfile, log_file)
        assert second.returncode == 1
        assert f"already running (pid {pid}" in second.stderr and "Traceback" not in second.stderr
        assert int(pidfile.read_text()) == pid
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not _pid_alive(pid), 15, "the daemon to exit")
    assert not pidfile.exists()
    assert '"exit_code": 0' in log_file.read_text()


def test_daemon_refuses_to_start_when_its_own_log_would_be_lost(tmp_path):
    """--daemon with a --log-file it cannot open: one line and exit 1 before detaching (as in the foreground)."""
    config_path = tmp_path / "bridged.yaml"
    config_path.write_text(yaml.safe_dump(base_config({"o": {"type": "stdout"}}, {"a": _binding("x", "a", "o")})))
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _run_daemon(config_path, tmp_path / "bridged.pid", blocker / "bridged.log")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"bridged: cannot open --log-file {blocker}/bridged.log: Not a directory"]
    assert not (tmp_path / "bridged.pid").exists()


def test_foreground_never_forks(start_bridged, tmp_path, uid, broker):
    """Without --daemon the started process is the one that runs (systemd, docker)."""
    pidfile = tmp_path / "fg.pid"
    config = base_config({"o": {"type": "stdout"}}, {"a": _binding(uid, "a", "o")})
    broker.queues.add(f"bridged.test.{uid}.a")
    broker.exchanges.add(f"test.deploy.{uid}")
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    assert bridged.proc.poll() is None
    assert bridged.count("started") == 1
    fg = subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(bridged.config_path),
                           "--pidfile", str(pidfile)], stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(pidfile.exists, 10, "pidfile")
        wait_until(lambda: pidfile.read_text().strip(), 10, "pid in pidfile")
        assert int(pidfile.read_text()) == fg.pid
    finally:
        fg.terminate()
        assert fg.wait(15) == 0
    assert not pidfile.exists()


class NotifySocket(DatagramServer):
    """The systemd side of sd_notify: KEY=VALUE datagrams on a unix socket."""

    def __init__(self, path: Path) -> None:
        super().__init__(socket.AF_UNIX, str(path))
        self.path = path

    def having(self, key: str, value: str | None = None) -> list[tuple[float, dict[str, str]]]:
        parsed = [(t, dict(line.split("=", 1) for line in data.decode().splitlines())) for t, data in self.received]
        return [(t, m) for t, m in parsed if key in m and (value is None or m[key] == value)]


def test_sd_notify_ready_status_reload_watchdog_stopping(start_bridged, tmp_path, uid, broker):
    """READY with STATUS once consuming, RELOADING then READY on HUP, WATCHDOG while healthy, STOPPING on TERM."""
    notify = NotifySocket(tmp_path / "notify.sock")
    config = base_config({"o": {"type": "stdout"}}, {"a": _binding(uid, "a", "o"), "b": _binding(uid, "b", "o")})
    broker.queues.update({f"bridged.test.{uid}.a", f"bridged.test.{uid}.b"})
    broker.exchanges.add(f"test.deploy.{uid}")
    try:
        bridged = start_bridged(config, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
        wait_until(lambda: notify.having("READY", "1"), 20, "READY=1")
        assert notify.having("READY")[0][1]["STATUS"] == "2/2 bindings consuming"
        wait_until(lambda: len(notify.having("WATCHDOG")) >= 4, 10, "watchdog pings")
        bridged.signal(signal.SIGHUP)
        wait_until(lambda: len(notify.having("READY", "1")) >= 2, 20, "READY=1 after the reload")
        assert notify.having("RELOADING", "1") and "MONOTONIC_USEC" in notify.having("RELOADING")[0][1]
        assert notify.having("RELOADING")[0][0] <= notify.having("READY")[1][0]
        assert bridged.stop() == 0
        assert notify.having("STOPPING", "1")
    finally:
        notify.close()


def test_ready_is_not_held_by_a_down_broker(start_bridged, tmp_path):
    """A broker that is down at boot does not hold READY: it comes after the first attempt."""
    notify = NotifySocket(tmp_path / "notify.sock")
    config = base_config({"o": {"type": "stdout"}}, {"a": {"exchange": "x", "sink": "o"}})
    config["broker"]["url"] = "amqp://guest:guest@127.0.0.1:1//"
    try:
        bridged = start_bridged(config, env={"NOTIFY_SOCKET": str(notify.path)})
        wait_until(lambda: notify.having("READY", "1"), 20, "READY=1")
        assert notify.having("READY")[0][1]["STATUS"] == "0/1 bindings consuming"
        assert bridged.proc.poll() is None
    finally:
        notify.close()


def test_watchdog_stops_while_a_binding_is_wedged(start_bridged, tmp_path, uid, broker):
    """A binding stuck in a sink write (a FIFO nobody reads) stops WATCHDOG=1; the other binding does not help."""
    notify = NotifySocket(tmp_path / "notify.sock")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    config = base_config(
        {"stuck": {"type": "file", "path": str(fifo)}, "o": {"type": "stdout"}},
        {"a": _binding(uid, "a", "stuck"), "b": _binding(uid, "b", "o")},
    )
    broker.queues.update({f"bridged.test.{uid}.a", f"bridged.test.{uid}.b"})
    broker.exchanges.add(f"test.deploy.{uid}")
    try:
        bridged = start_bridged(config, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
        bridged.wait_event("consuming", count=2)
        wait_until(lambda: notify.having("WATCHDOG"), 10, "first watchdog ping")
        broker.publish(f"test.deploy.{uid}", "a", b"this write blocks on the FIFO")
        bridged.wait_event("bindings_wedged", timeout=30, bindings=["a"])
        pings_then = len(notify.having("WATCHDOG"))
        time.sleep(2)
        assert len(notify.having("WATCHDOG")) == pings_then, "WATCHDOG=1 sent while a binding is wedged"
    finally:
        with open(fifo, "rb"):  # unblock the writer so the process can be stopped
            pass
        notify.close()


def test_sighup_reload_restarts_only_what_changed(start_bridged, tmp_path, uid, broker):
    """Changed binding restarted, new started, removed stopped; an untouched one keeps flowing without a blip."""
    exchange = f"test.deploy.{uid}"
    files = {name: tmp_path / f"{name}.log" for name in "abcd"}
    sinks = {name: {"type": "file", "path": str(path)} for name, path in files.items()}
    config = base_config(sinks, {name: _binding(uid, name, name) for name in "abc"})
    broker.queues.update(f"bridged.test.{uid}.{name}" for name in "abcd")
    broker.exchanges.add(exchange)
    bridged = start_bridged(config)
    bridged.wait_event("consuming", count=3)

    stop_flow = threading.Event()
    sent: list[str] = []

    def flow() -> None:
        publisher = type(broker)()
        i = 0
        while not stop_flow.is_set():
            publisher.publish(exchange, "a", f"a{i}".encode())
            sent.append(f"a{i}")
            i += 1
            time.sleep(0.002)
        publisher.conn.close()

    flowing = threading.Thread(target=flow)
    flowing.start()
    try:
        wait_until(lambda: len(read_lines(files["a"])) > 100, 20, "binding a flowing")
        new = base_config(sinks, {"a": _binding(uid, "a", "a"), "b": _binding(uid, "b", "b", format="json"),
                                  "d": _binding(uid, "d", "d")})  # fmt: skip
        bridged.config_path.write_text(yaml.safe_dump(new))
        bridged.signal(signal.SIGHUP)
        bridged.wait_event("reloaded")
        reloaded = next(e for e in bridged.events() if e["event"] == "reloaded")
        assert reloaded["restarted"] == ["b"] and reloaded["started"] == ["d"] and reloaded["stopped"] == ["c"]
        bridged.wait_event("consuming", binding="d")
        bridged.wait_event("consuming", count=2, binding="b")
        assert bridged.count("consuming", binding="a") == 1, "the untouched binding reconnected"

        # An invalid config is refused with one error; everything keeps running.
        bridged.config_path.write_text("bindings: {a: {exchange_type: fanot}}\n")
        bridged.signal(signal.SIGHUP)
        bridged.wait_event("reload_failed")
        failure = next(e for e in bridged.events() if e["event"] == "reload_failed")
        assert "sinks: is required" in failure["reason"]
    finally:
        stop_flow.set()
        flowing.join(10)
    for key, name in (("b", "b"), ("c", "c"), ("d", "d")):
        broker.publish(exchange, key, f"after-{name}".encode())
    assert wait_lines(files["a"], len(sent), timeout=30) == sent
    assert '"body":"after-b"' in wait_lines(files["b"], 1)[-1]
    assert wait_lines(files["d"], 1) == ["after-d"]
    time.sleep(1)
    assert read_lines(files["c"]) == [], "a removed binding still consumes"
    assert bridged.proc.poll() is None


@pytest.mark.skipif(not Path("/usr/sbin/logrotate").exists(), reason="logrotate is not installed")
def test_real_logrotate_create_mode_loses_nothing(start_bridged, tmp_path, uid, broker):
    """logrotate (create + postrotate HUP) run three times while messages flow: every message in some file."""
    exchange = f"test.deploy.{uid}"
    out = tmp_path / "logs" / "out.log"
    pidfile = tmp_path / "bridged.pid"
    config = base_config({"f": {"type": "file", "path": str(out)}}, {"a": _binding(uid, "a", "f")})
    broker.queues.add(f"bridged.test.{uid}.a")
    broker.exchanges.add(exchange)
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    pidfile.write_text(f"{bridged.proc.pid}\n")
    conf = tmp_path / "logrotate.conf"
    conf.write_text(
        f"{out} {{\n  rotate 10\n  create\n  missingok\n  postrotate\n    kill -HUP $(cat {pidfile})\n  endscript\n}}\n"
    )
    total = 3000
    publisher = threading.Thread(
        target=lambda: [(broker.publish(exchange, "a", f"m{i}".encode()), time.sleep(0.001)) for i in range(total)]
    )
    publisher.start()
    for rotation in range(3):
        wait_until(lambda: len(read_lines(out)) > 100, 30, f"lines before rotation {rotation}")
        subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)], check=True, timeout=30)
    publisher.join(60)
    files = [out] + [out.with_name(f"out.log.{n}") for n in (1, 2, 3)]

    def all_lines() -> list[str]:
        return [line for path in files for line in read_lines(path)]

    wait_until(lambda: len(set(all_lines())) >= total, 30, "every message in the rotated files")
    assert set(all_lines()) == {f"m{i}" for i in range(total)}
    assert all(read_lines(path) for path in files), "a rotation left an empty file"
    assert bridged.proc.poll() is None


def test_log_file_is_reopened_on_sighup(broker, start_bridged, uid, tmp_path):
    """logrotate renames bridged's own log and sends HUP: new events go to the new file."""
    _exchange, _, binding = fanout_binding(broker, uid, sink="f")
    log = tmp_path / "bridged.log"
    config = base_config({"f": {"type": "file", "path": str(tmp_path / "o.log")}}, {"b": binding})
    bridged = start_bridged(config, args=["--log-file", str(log), "--log-format", "json"])
    wait_until(lambda: "consuming" in log.read_text() if log.exists() else False, 30, "consuming in the log file")
    os.rename(log, tmp_path / "bridged.log.1")
    bridged.signal(signal.SIGHUP)
    wait_until(lambda: log.exists() and "reloaded" in log.read_text(), 30, "events in the new log file")
    events = [json.loads(line)["event"] for line in read_lines(log)]
    assert "reloaded" in events


def test_unwritable_health_file_is_logged_once_and_debug_shows_the_flow(broker, start_bridged, uid, tmp_path):
    """--health-file that cannot be touched: one warning, not one a second; --log-level debug shows each batch."""
    exchange, _, binding = fanout_binding(broker, uid, sink="f")
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = base_config({"f": {"type": "file", "path": str(tmp_path / "o.log")}}, {"b": binding})
    bridged = start_bridged(config, args=["--health-file", str(blocker / "health")])  # conftest runs with debug
    bridged.wait_event("consuming")
    broker.publish(exchange, "", b"one")
    wait_lines(tmp_path / "o.log", 1)
    time.sleep(3)  # the supervisor ticks once a second
    assert bridged.count("health_file_failed") == 1
    assert bridged.count("declared") == 1 and bridged.count("batch_acked", lines=1) == 1
    blocker.unlink()
    blocker.mkdir()
    bridged.wait_event("health_file_recovered")
    wait_until(lambda: (blocker / "health").exists(), 10, "the health file")


def test_the_open_file_limit_is_raised_to_the_config_and_a_short_one_is_named_at_start(start_bridged, tmp_path, uid,
                                                                                        broker):  # fmt: skip
    """A path template that may hold 500 files open: the soft limit is raised up to the hard one, and a hard
    limit below what the config can need gets one config_warning at start; the binding still runs."""
    import resource

    def limits(soft: int, hard: int) -> Callable[[], None]:
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    exchange, _, binding = fanout_binding(broker, uid, sink="t")
    sink = {"type": "file", "path": str(tmp_path / "t" / "{routing_key}.log"), "max_open_files": 500}
    config = base_config({"t": sink}, {"b": binding})
    roomy = start_bridged(config, preexec_fn=limits(64, 4096))
    roomy.wait_event("consuming")
    assert _soft_open_files(roomy.proc.pid) >= 500 and roomy.count("config_warning") == 0
    roomy.stop()
    short = start_bridged(config, preexec_fn=limits(64, 128))
    short.wait_event("consuming")
    warning = next(e for e in short.events() if e["event"] == "config_warning")["warning"]
    assert "the open-file limit is 128" in warning and "LimitNOFILE=" in warning
    assert _soft_open_files(short.proc.pid) == 128
    broker.publish(exchange, "k", b"still written")
    assert wait_lines(tmp_path / "t" / "k.log", 1) == ["still written"]


def _soft_open_files(pid: int) -> int:
    line = next(x for x in open(f"/proc/{pid}/limits") if x.startswith("Max open files"))
    return int(line.split()[3])
