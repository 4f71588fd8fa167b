"""bridged against the Apache AMQP 1.0 brokers themselves: ActiveMQ Artemis and Qpid Broker-J (#26).

Each broker runs from its own downloaded distribution (tests/integration/apache.py); the messages come from
an independent proton client and are counted by their outcome at the sender.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import AMQP10_RECONNECT, amqp10_config, pipe_full, read_lines, tool, wait_until

pytest.importorskip("proton", reason="pip install '.[amqp10]' (qpid-proton)")

from proton import Message

from tests.integration.amqp10peer import receive, send_all
from tests.integration.apache import BROKERS, START_LIMIT, ApacheBroker
from tests.integration.reliability import record

pytestmark = pytest.mark.slow

# How long a binding takes to be back after its broker is: the broker's start, then one reconnect step.
BACK_LIMIT = START_LIMIT + AMQP10_RECONNECT["max_delay"] + 30


@pytest.fixture(params=sorted(BROKERS))
def apache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApacheBroker]:
    broker = BROKERS[request.param](tmp_path / request.param)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def test_the_source_loses_nothing_through_kill_9_and_a_broker_crash(apache, tmp_path, start_bridged):
    """kill -9 of bridged mid-stream, then kill -9 of the broker and its restart: every accepted message is
    written (lost 0), duplicates counted."""
    count, address, out = 3000, "bridged.test", tmp_path / "out.log"
    sent = [Message(body=f"m-{i:06d}", durable=True) for i in range(count)]
    outcomes = send_all(apache.url, address, sent, timeout=START_LIMIT)
    assert outcomes == {"accepted": count}, outcomes
    cfg = amqp10_config(apache.url, address, out, format="{body}", prefetch=200, batch_size=50)
    first = start_bridged(cfg)
    wait_until(lambda: len(read_lines(out)) >= count / 4, START_LIMIT, "a quarter written")
    first.kill()  # SIGKILL: what it had not settled goes back to the queue
    second = start_bridged(cfg)
    second.wait_event("consuming", timeout=START_LIMIT)
    wait_until(lambda: len(read_lines(out)) >= count / 2, START_LIMIT, "half written")
    apache.kill()  # the broker dies with deliveries in flight
    apache.start()
    second.wait_event("consuming", count=2, timeout=BACK_LIMIT)
    expected = {f"m-{i:06d}" for i in range(count)}
    wait_until(lambda: expected <= set(read_lines(out)), BACK_LIMIT, "every message")
    lines = read_lines(out)
    lost, duplicated = len(expected - set(lines)), len(lines) - len(set(lines))
    record(f"AMQP 1.0 source on {apache.kind}: kill -9 of bridged, then of the broker", sent=count, lost=lost,
           duplicated=duplicated)  # fmt: skip
    assert lost == 0 and set(lines) == expected
    # Nothing left to read: a third bridged finds the queue empty.
    second.stop()
    third = start_bridged(cfg)
    third.wait_event("consuming", timeout=START_LIMIT)
    assert send_all(apache.url, address, [Message(body="last", durable=True)], START_LIMIT) == {"accepted": 1}
    wait_until(lambda: read_lines(out)[-1:] == ["last"], START_LIMIT, "the last one")
    assert len(read_lines(out)) == len(lines) + 1  # nothing else came again


def test_tail_browses_consume_takes_and_a_killed_tail_holds_nothing(apache, tmp_path):
    """tail browses (the queue keeps all 8), --consume --count 3 takes exactly 3, and a consuming tail killed
    with SIGKILL while its stdout is full leaves every message it had not printed in the queue."""
    address, url = "bridged.tail", f"{apache.url}/bridged.tail"
    assert send_all(apache.url, address, [Message(body=f"t-{i}", durable=True) for i in range(8)],
                    START_LIMIT) == {"accepted": 8}  # fmt: skip
    first = tool("tail", url, "--count", "5", "-f", "{body}")
    assert (first.returncode, first.stdout.split()) == (0, [f"t-{i}" for i in range(5)]), first.stderr
    browsed = tool("tail", url, "--timeout", "2", "-f", "{body}")
    assert browsed.stdout.split() == [f"t-{i}" for i in range(8)]  # browsing took nothing
    taken = tool("tail", url, "--consume", "--count", "3", "-f", "{body}")
    assert (taken.returncode, taken.stdout.split()) == (0, ["t-0", "t-1", "t-2"]), taken.stderr
    left = tool("tail", url, "--timeout", "2", "-f", "{body}")
    assert left.stdout.split() == [f"t-{i}" for i in range(3, 8)]

    # A consuming tail whose reader stopped reading: its pipe fills (64 KiB) and it blocks with one message in
    # hand (credit 1). kill -9 then: what it printed is taken, the rest (that one too) is in the queue.
    big = [Message(body=f"k-{i:05d}-" + "x" * 200, durable=True) for i in range(1000)]
    assert send_all(apache.url, "bridged.kill", big, START_LIMIT) == {"accepted": 1000}
    reader, writer = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "bridged", "tail", f"{apache.url}/bridged.kill", "--consume",
                             "-f", "{body}"], stdout=writer)  # fmt: skip
    os.close(writer)
    wait_until(lambda: pipe_full(reader), START_LIMIT, "tail blocked on a full pipe")
    proc.kill()
    proc.wait(START_LIMIT)
    with os.fdopen(reader, "rb") as pipe:
        printed = [line.split(b"-x")[0].decode() for line in pipe.read().splitlines() if line.endswith(b"x")]
    rest = [str(m.body).split("-x")[0] for m in receive(apache.url, "bridged.kill", 1000, timeout=30)]
    expected = [f"k-{i:05d}" for i in range(1000)]
    assert set(printed) | set(rest) == set(expected)  # nothing lost, nothing locked by the dead tail
    assert len(printed) + len(rest) - len(expected) <= 1  # at most the one in hand is both printed and back
    assert 0 < len(printed) < 1000


def test_publish_keeps_every_property_and_check_connect_takes_nothing(apache, tmp_path):
    """publish: an independent proton receiver reads body, subject, ids, content type, durability, ttl and
    application properties back; --check --connect attaches without taking."""
    address = "bridged.props"
    sent = tool("publish", f"{apache.url}/{address}", '{"n": 1}', "--count", "3", "--persistent",
                "--subject", "notifications.info", "-H", "tenant=t1", "--property", "message_id=m-1",
                "--property", "correlation_id=c-1", "--property", "content_type=application/json",
                "--property", "expiration=600000")  # fmt: skip
    assert (sent.returncode, sent.stdout.strip()) == (0, "3 sent, 3 accepted"), sent.stderr
    config_path = tmp_path / "check.yaml"
    config_path.write_text(json.dumps(amqp10_config(apache.url, address, tmp_path / "out.log")))
    check = tool("--config", str(config_path), "--check", "--connect")
    assert check.returncode == 0, check.stderr
    got = receive(apache.url, address, 3, START_LIMIT)
    assert len(got) == 3  # --check --connect took none of them
    message = got[0]
    assert bytes(message.body) == b'{"n": 1}' and message.subject == "notifications.info"
    assert (message.id, message.correlation_id, message.content_type) == ("m-1", "c-1", "application/json")
    assert message.durable and message.properties == {"tenant": "t1"} and 0 < message.ttl <= 600
