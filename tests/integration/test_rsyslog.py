"""A real rsyslog (its own config, not the system's) reads bridged's syslog sinks right.

Over a unix socket (imuxsock, as /dev/log) bridged speaks the local syslog(3)
format; over UDP (imudp) RFC 5424. rsyslog must see the severity of the
notification's priority, bridged's tag as app-name, its pid, event_type as
MSGID (RFC 5424), and the line itself as the message, with no header inside.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import base_config, read_lines, wait_until

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
FIELDS = "%syslogseverity-text%|%syslogfacility-text%|%app-name%|%procid%|%msgid%|%msg%"


class Rsyslog:
    """rsyslogd in the foreground with imuxsock on a socket of ours, imudp on a free port, and one output file."""

    def __init__(self, directory: Path) -> None:
        self.socket_path = directory / "log.sock"
        self.output = directory / "received.log"
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        self.udp_port = probe.getsockname()[1]
        probe.close()
        conf = directory / "rsyslog.conf"
        conf.write_text(
            f"""
global(workDirectory="{directory}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{self.socket_path}" RateLimit.Interval="0")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" rateLimit.Interval="0")
template(name="fields" type="string" string="%inputname%|{FIELDS}\\n")
*.* action(type="omfile" file="{self.output}" template="fields")
"""
        )
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(directory / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(lambda: self.socket_path.exists() or self.proc.poll() is not None, 20, "rsyslog's socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]

    def records(self) -> list[dict[str, str]]:
        keys = ("input", "severity", "facility", "app", "procid", "msgid", "msg")
        return [dict(zip(keys, line.split("|", 6), strict=True)) for line in read_lines(self.output)]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    if not os.path.exists(RSYSLOGD):
        if os.environ.get("CI"):
            pytest.fail("rsyslogd is not installed (apt-get install rsyslog)")
        pytest.skip("rsyslogd is not installed (apt-get install rsyslog)")
    server = Rsyslog(tmp_path)
    yield server
    server.stop()


def notification(priority: str, event_type: str, index: int) -> bytes:
    inner = {"message_id": f"m{index}", "publisher_id": "compute.ctl1", "event_type": event_type,
             "priority": priority, "payload": {"n": index}, "timestamp": "2026-11-22 05:16:18.000001"}  # fmt: skip
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


CASES = [  # priority -> the severity rsyslog must report
    ("CRITICAL", "crit"), ("ERROR", "err"), ("WARN", "warning"), ("WARNING", "warning"),
    ("INFO", "info"), ("AUDIT", "notice"), ("SAMPLE", "info"), ("DEBUG", "debug"),
]  # fmt: skip


def test_rsyslog_parses_unix_and_udp_sinks(broker, start_bridged, uid, rsyslog):
    exchange, queue = f"test.rsyslog.{uid}", f"bridged.test.{uid}"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    sinks = {
        "local": {"type": "syslog", "address": str(rsyslog.socket_path), "facility": "local3", "tag": "nova"},
        "udp": {
            "type": "syslog",
            "address": f"udp://127.0.0.1:{rsyslog.udp_port}",
            "facility": "local3",
            "tag": "nova",
        },
    }
    binding = {
        "exchange": exchange,
        "exchange_type": "fanout",
        "queue": queue,
        "sinks": ["local", "udp"],
        "format": "oslo",
    }
    bridged = start_bridged(base_config(sinks, {"b": binding}))
    bridged.wait_event("consuming")
    for i, (priority, _) in enumerate(CASES):
        broker.publish(exchange, "", notification(priority, f"compute.instance.event{i}", i))
    broker.publish(exchange, "", b"not a notification")
    expected = len(CASES) + 1
    wait_until(lambda: len(rsyslog.records()) >= 2 * expected, 30, f"{2 * expected} records in rsyslog's file")
    records = rsyslog.records()
    assert len(records) == 2 * expected
    for input_name in ("imuxsock", "imudp"):
        got = [r for r in records if r["input"] == input_name]
        assert len(got) == expected, (input_name, records)
        for i, ((_, severity), record) in enumerate(zip(CASES, got, strict=False)):
            assert record["severity"] == severity and record["facility"] == "local3", record
            assert record["app"] == "nova" and record["procid"] == str(bridged.proc.pid), record
            rec = json.loads(record["msg"].lstrip())  # the message is the JSON line, nothing before it
            assert rec["payload"] == {"n": i} and rec["priority"] == CASES[i][0]
            if input_name == "imudp":
                assert record["msgid"] == f"compute.instance.event{i}"
        plain = got[-1]
        assert plain["severity"] == "info" and json.loads(plain["msg"])["body"] == "not a notification", plain
        assert plain["msgid"] == "-"
