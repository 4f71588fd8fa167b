"""What a new user meets first: every start failure is one line and a non-zero exit (foreground and --daemon),
`--check --connect` finds what the daemon would fail on, the tools warn where they would show nothing, and the
daemon's own log reads well (#24)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import BROKER_URL, RUN_LIMIT, Broker, base_config, tool, wait_until
from tests.integration.servers import free_port
from tests.integration.test_tools import pika_channel, vhost_url

# Imports with qpid-proton made unimportable, as on a machine without the amqp10 extra.
WITHOUT_PROTON = "import sys; sys.modules['proton'] = sys.modules['cproton'] = None; "


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "bridged.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (and no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def stdout_config(broker: Broker, uid: str, **top: Any) -> dict[str, Any]:
    exchange = f"test.{uid}"
    broker.exchanges.add(exchange)
    broker.queues.add(f"bridged.test.{uid}")
    binding = {"exchange": exchange, "exchange_type": "fanout", "queue": f"bridged.test.{uid}", "sink": "out"}
    return base_config({"out": {"type": "stdout"}}, {"b": binding}, **top)


def test_a_taken_metrics_address_fails_the_start_with_one_line_in_the_foreground_and_as_a_daemon(
    broker, uid, tmp_path, taken_port
):
    config = write_config(tmp_path, stdout_config(broker, uid, metrics={"listen": f"127.0.0.1:{taken_port}"}))
    expected = f"bridged: cannot start: metrics.listen 127.0.0.1:{taken_port}: Address already in use"
    foreground = tool("--config", str(config))
    assert foreground.returncode == 1 and one_line(foreground) == expected
    pidfile, log = tmp_path / "bridged.pid", tmp_path / "own.log"
    daemon = tool("--config", str(config), "--daemon", "--pidfile", str(pidfile), "--log-file", str(log))
    assert daemon.returncode == 1 and one_line(daemon) == expected
    assert not pidfile.exists()  # no daemon left behind
    checked = tool("--config", str(config), "--check", "--connect")
    assert checked.returncode == 2
    assert f"metrics.listen: 127.0.0.1:{taken_port}: Address already in use" in checked.stderr


def test_check_connect_tries_a_file_sink_for_real(broker, uid, tmp_path):
    """A directory that can never be created (even as root) fails the check with the sink's key; a creatable one
    passes, and the check changes nothing (its probe file, made where the directory would be created, is gone)."""
    config = stdout_config(broker, uid)
    config["sinks"]["never"] = {"type": "file", "path": "/proc/nonexistent/dir/out.log"}
    config["bindings"]["b"]["sinks"] = ["out", "never"]
    del config["bindings"]["b"]["sink"]
    checked = tool("--config", str(write_config(tmp_path, config)), "--check", "--connect")
    assert checked.returncode == 2, checked.stderr
    assert "sinks.never:" in checked.stderr and "/proc/nonexistent/dir" in checked.stderr
    fine = tmp_path / "logs" / "deep"
    config["sinks"]["never"]["path"] = str(fine / "out.log")
    checked = tool("--config", str(write_config(tmp_path, config)), "--check", "--connect")
    assert checked.returncode == 0, checked.stderr
    assert not (tmp_path / "logs").exists() and not any(p.name.startswith(".bridged-probe") for p in tmp_path.iterdir())


def test_an_unwritable_own_log_is_one_line_and_the_same_exit_in_both_modes(broker, uid, tmp_path):
    config = write_config(tmp_path, stdout_config(broker, uid))
    log = tmp_path / "no-such-dir" / "own.log"
    expected = f"bridged: cannot open --log-file {log}: No such file or directory"
    for mode in ([], ["--daemon", "--pidfile", str(tmp_path / "p.pid")]):
        result = tool("--config", str(config), "--log-file", str(log), *mode)
        assert result.returncode == 1 and one_line(result) == expected, mode


def test_the_own_log_file_is_created_0640(broker, uid, tmp_path):
    config = write_config(tmp_path, stdout_config(broker, uid))
    log = tmp_path / "own.log"
    proc = subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(config), "--log-file", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_until(lambda: log.exists() and b"consuming" in log.read_bytes(), RUN_LIMIT, "consuming in the log")
        assert stat.S_IMODE(log.stat().st_mode) == 0o640 & ~current_umask()
    finally:
        proc.terminate()
        assert proc.wait(RUN_LIMIT) == 0


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("check", [False, True])
def test_amqp10_without_its_extra_names_the_pip_command(tmp_path, check):
    config = {"broker": {"url": "amqp10://guest:guest@127.0.0.1:5672"}, "sinks": {"out": {"type": "stdout"}},
              "bindings": {"b": {"address": "/amq/queue/q", "sink": "out"}}}  # fmt: skip
    path = write_config(tmp_path, config)
    args = ["--config", str(path), *(["--check"] if check else [])]
    result = subprocess.run([sys.executable, "-c", WITHOUT_PROTON + f"from bridged.cli import main; "
                             f"raise SystemExit(main({args!r}))"], capture_output=True, text=True,
                            timeout=RUN_LIMIT)  # fmt: skip
    assert result.returncode == 2
    assert "broker.url: amqp10:// needs qpid-proton: pip install 'bridged[amqp10]'" in one_line(result)


def test_a_huge_integer_in_the_config_is_one_line(tmp_path):
    path = tmp_path / "bridged.yaml"
    path.write_text(f"broker:\n  heartbeat: {'9' * 5000}\nsinks: {{o: {{type: stdout}}}}\n"
                    "bindings: {b: {exchange: x, sink: o}}\n")  # fmt: skip
    for args in (["--check"], []):
        result = tool("--config", str(path), *args)
        assert result.returncode == 2 and "broker.heartbeat" in one_line(result), args


def test_a_wrong_password_names_the_keys_to_change(broker, uid, start_bridged):
    config = stdout_config(broker, uid)
    config["broker"]["url"] = BROKER_URL.replace("guest:guest", "guest:wrong")
    bridged = start_bridged(config)
    bridged.wait_event("broker_refused", timeout=RUN_LIMIT)
    reason = next(e for e in bridged.events() if e["event"] == "broker_refused")["reason"]
    assert "broker.url" in reason and "broker.password" in reason and "wrong" not in reason


def test_publish_and_check_connect_exit_alike_for_an_unreachable_broker(tmp_path, broker, uid):
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    published = tool("publish", "--url", url, "amq.topic", "k", "hello")
    assert published.returncode == 2 and "cannot connect" in one_line(published)
    config = stdout_config(broker, uid)
    config["broker"]["url"] = url
    config["broker"]["connect_timeout"] = 2
    checked = tool("--config", str(write_config(tmp_path, config)), "--check", "--connect")
    assert checked.returncode == 2 and "cannot connect" in checked.stderr


def test_publish_with_no_queue_bound_says_unroutable_and_exits_5():
    result = tool("publish", "amq.topic", f"nobody.listens.{time.time_ns()}", "hello")
    assert result.returncode == 5
    assert (
        result.stdout.strip() == "1 sent, 1 confirmed, 1 unroutable (no queue is bound for this routing key: returned)"
    )


def test_tail_warns_where_it_would_show_nothing_and_names_the_argument(vhost, tmp_path):
    conn, channel = pika_channel(vhost)
    channel.exchange_declare("nova", "topic")  # as nova declares it
    channel.exchange_declare("audit", "direct")
    conn.close()
    url = vhost_url(vhost)
    direct = tool("tail", "--url", url, "amq.direct", "--timeout", "1")
    assert direct.returncode == 0
    assert direct.stderr.splitlines()[0] == (
        "bridged: warning: ROUTING_KEY: none given, and the default '#' matches nothing on direct exchange "
        "'amq.direct' (it matches keys exactly, without wildcards): name the routing keys to watch"
    )
    by_api = tool("tail", "--url", url, "audit", "audit.*", "--timeout", "1")  # its type, from the management API
    assert "bridged: warning: ROUTING_KEY: 'audit.*' matches nothing on direct exchange 'audit'" in by_api.stderr
    exact = tool("tail", "--url", url, "audit", "audit.login", "--timeout", "1")
    assert exact.returncode == 0 and "warning" not in exact.stderr
    nova = tool("tail", "--url", url, "nova", "--timeout", "1")
    assert "ROUTING_KEY: '#' on OpenStack control exchange 'nova' also copies RPC messages" in nova.stderr
    assert "EXCHANGE.routing_keys" not in nova.stderr


def test_the_console_stats_line_comes_early_and_reads_as_key_value(broker, uid, tmp_path):
    """Default stats_interval (60 s): the first line about 10 s after the start, `b[received=N acked=N ...]`."""
    from bridged.supervisor import FIRST_STATS_AFTER

    config = stdout_config(broker, uid)
    path = write_config(tmp_path, config)
    err = tmp_path / "stderr"
    with err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(path), "--log-format", "console"],
                                stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    started = time.monotonic()
    try:
        wait_until(lambda: "consuming" in err.read_text(), RUN_LIMIT, "consuming")
        for i in range(3):
            broker.publish(f"test.{uid}", "", f"m{i}")
        line = wait_until(lambda: next((x for x in err.read_text().splitlines() if " stats " in x), None),
                          FIRST_STATS_AFTER + RUN_LIMIT, "the first stats line")  # fmt: skip
        assert time.monotonic() - started < 60  # long before the 60 s interval
        assert "b[received=3 acked=3 backlog=" in line and "unacked=0]" in line, line
        assert "{" not in line and "None" not in line and "redelivered" not in line  # zero counters left out
    finally:
        proc.terminate()
        assert proc.wait(RUN_LIMIT) == 0
