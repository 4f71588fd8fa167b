"""AMQP 1.0 sources: RabbitMQ's amqp1_0 plugin and an independent proton peer, with real bridged processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import (
    AMQP10_RECONNECT,
    BROKER_HOST,
    amqp10_config,
    pipe_full,
    queue_counts,
    rabbitmqctl,
    read_lines,
    tool,
    wait_until,
)
from tests.integration.servers import ProtonPeer

pytest.importorskip("proton", reason="pip install '.[amqp10]' (qpid-proton)")


def plugin_enabled() -> bool:
    out = subprocess.run(["rabbitmq-plugins", "list", "-e", "rabbitmq_amqp1_0"], capture_output=True, text=True)
    return "rabbitmq_amqp1_0" in out.stdout


@pytest.fixture
def amqp10_broker() -> str:
    if not plugin_enabled():
        pytest.fail("rabbitmq_amqp1_0 is not enabled (rabbitmq-plugins enable rabbitmq_amqp1_0; .ci/run does)")
    return f"amqp10://guest:guest@{BROKER_HOST}"


def test_reads_what_a_0_9_1_publisher_routed(broker, uid, tmp_path, start_bridged, amqp10_broker):
    """A 0-9-1 publisher routes through a topic exchange; bridged reads the queue over AMQP 1.0, all of it."""
    exchange, queue, out = f"test.a10.{uid}", f"bridged.test.{uid}", tmp_path / "out.log"
    broker.declare_exchange(exchange, "topic")
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.channel.queue_bind(queue, exchange, "notifications.*")
    broker.queues.add(queue)
    bridged = start_bridged(amqp10_config(amqp10_broker, f"/amq/queue/{queue}", out, format="json"))
    bridged.wait_event("consuming")
    for i in range(300):
        broker.publish(exchange, "notifications.info", f'{{"n": {i}, "password": "s3cret"}}', message_id=f"id-{i}")
    lines = wait_until(lambda: len(read_lines(out)) >= 300 and read_lines(out), 30, "300 lines")
    records = [json.loads(line) for line in lines]
    assert [r["body"]["n"] for r in records] == list(range(300))
    assert {r["routing_key"] for r in records} == {"notifications.info"}
    assert records[7]["properties"]["message_id"] == "id-7" and records[7]["body"]["password"] == "[redacted]"
    wait_until(lambda: queue_counts(queue) == (0, 0), 30, "every delivery settled")


def test_kill_9_and_close_all_connections_lose_nothing(broker, uid, tmp_path, start_bridged, amqp10_broker):
    """kill -9 mid-stream, then rabbitmqctl close_all_connections: every message written, duplicates counted."""
    queue, out = f"bridged.test.{uid}", tmp_path / "out.log"
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.queues.add(queue)
    cfg = amqp10_config(amqp10_broker, f"/amq/queue/{queue}", out)
    count = 6000
    for i in range(count):
        broker.publish("", queue, f"m-{i:06d}")
    first = start_bridged(cfg)
    wait_until(lambda: len(read_lines(out)) >= count / 4, 60, "a quarter written")
    first.kill()  # SIGKILL: unsettled deliveries go back to the queue
    second = start_bridged(cfg)
    second.wait_event("consuming")
    wait_until(lambda: len(read_lines(out)) >= count / 2, 60, "half written")
    rabbitmqctl("close_all_connections", "test: forced close")
    second.wait_event("consuming", count=2, timeout=30)
    expected = {f"m-{i:06d}" for i in range(count)}
    wait_until(lambda: expected <= set(read_lines(out)), 60, "every message")
    wait_until(lambda: queue_counts(queue) == (0, 0), 30, "every delivery settled")
    lines = read_lines(out)
    print(f"\nAMQP 1.0: {count} sent, lost {len(expected - set(lines))}, duplicated {len(lines) - len(set(lines))}")
    assert expected <= set(lines)


@pytest.mark.parametrize(
    ("password", "address", "expected"),
    [
        ("Wr0ngPass", "/amq/queue/{queue}", "the broker refused the login"),
        ("guest", "/amq/queue/missing-{queue}", "the address does not exist on the broker (bindings.b.address"),
    ],
)
def test_refusals_are_one_clear_line(broker, uid, tmp_path, start_bridged, amqp10_broker, password, address,
                                     expected):  # fmt: skip
    """A wrong password and a missing address: broker_refused naming why, retried at the slow pace, no password."""
    queue = f"bridged.test.{uid}"
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.queues.add(queue)
    url = amqp10_broker.replace("guest:guest", f"guest:{password}")
    bridged = start_bridged(amqp10_config(url, address.format(queue=queue), tmp_path / "out.log"))
    bridged.wait_event("broker_refused", timeout=30)
    event = next(e for e in bridged.events() if e.get("event") == "broker_refused")
    assert expected in event["reason"], event
    assert event["retry_in"] == AMQP10_RECONNECT["max_delay"]
    assert "Wr0ngPass" not in bridged.stderr_path.read_text()


def test_an_independent_amqp10_peer_unsettled_and_presettled(tmp_path, start_bridged):
    """A proton-based peer: unsettled deliveries are written then accepted; a pre-settled link is refused."""
    peer = ProtonPeer(count=500)
    try:
        out = tmp_path / "peer.log"
        bridged = start_bridged(amqp10_config(f"amqp10://127.0.0.1:{peer.port}", "orders", out,
                                       format="{routing_key} {body}"))  # fmt: skip
        wait_until(lambda: len(read_lines(out)) >= 500, 30, "500 lines from the peer")
        wait_until(lambda: len(peer.outcomes) >= 500, 30, "500 outcomes at the peer")
        assert read_lines(out) == [f"peer.key m-{i:06d}" for i in range(500)]
        assert set(peer.outcomes) == {"accepted"}
        bridged.stop()
    finally:
        peer.close()
    presettled = ProtonPeer(count=5, presettled=True)
    try:
        out = tmp_path / "presettled.log"
        bridged = start_bridged(amqp10_config(f"amqp10://127.0.0.1:{presettled.port}", "orders", out))
        bridged.wait_event("broker_refused", timeout=30)
        reason = next(e for e in bridged.events() if e.get("event") == "broker_refused")["reason"]
        assert "pre-settled (at most once" in reason
        time.sleep(0.5)
        assert read_lines(out) == []  # nothing written from a stream that could lose messages
    finally:
        presettled.close()


def test_check_connect_attaches_without_taking(broker, uid, tmp_path, amqp10_broker):
    """--check --connect on an AMQP 1.0 broker: login and address checked with no credit; nothing is taken."""
    import yaml

    from tests.integration.conftest import tool

    queue = f"bridged.test.{uid}"
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.queues.add(queue)
    broker.publish("", queue, "stays")
    cases = [
        (amqp10_broker, f"/amq/queue/{queue}", 0, "connected: 1 broker URL,"),
        (amqp10_broker.replace("guest:guest", "guest:Wr0ngPass"), f"/amq/queue/{queue}", 2,
         "broker.url: amqp10://guest:****@"),
        (amqp10_broker, f"/amq/queue/missing-{queue}", 2, "bindings.b.address: "),
    ]  # fmt: skip
    for i, (url, address, code, expected) in enumerate(cases):
        path = tmp_path / f"check{i}.yaml"
        path.write_text(yaml.safe_dump(amqp10_config(url, address, tmp_path / "out.log")))
        result = tool("--config", str(path), "--check", "--connect")
        assert result.returncode == code, result.stderr
        assert expected in result.stdout + result.stderr
        assert "Wr0ngPass" not in result.stdout + result.stderr
    assert queue_counts(queue) == (1, 0)  # the probe took nothing


@pytest.mark.parametrize("size", [16 * 1024, 256 * 1024, 1024 * 1024, 16 * 1024 * 1024])
def test_messages_larger_than_a_frame_are_assembled(broker, uid, tmp_path, start_bridged, amqp10_broker, size):
    """16 KiB to 16 MiB from a 0-9-1 publisher, read over AMQP 1.0 in many transfers: every one written whole."""
    queue, out = f"bridged.test.{uid}", tmp_path / "out.log"
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.queues.add(queue)
    count = 3
    for i in range(count):
        broker.publish("", queue, f"m{i}:".encode() + b"x" * (size - 3))
    bridged = start_bridged(amqp10_config(amqp10_broker, f"/amq/queue/{queue}", out))
    wait_until(lambda: len(read_lines(out)) >= count, 120, f"{count} messages of {size} bytes")
    assert [len(line) for line in read_lines(out)] == [size] * count
    wait_until(lambda: queue_counts(queue) == (0, 0), 30, "every delivery settled")
    assert bridged.count("binding_failed") == 0 and bridged.count("reconnect_scheduled") == 0


def _sections(*parts: bytes) -> bytes:
    return b"".join(parts)


def _section(code: int, value: bytes) -> bytes:
    return b"\x00\x53" + bytes([code]) + value


def _str8(raw: bytes) -> bytes:
    return b"\xa1" + bytes([len(raw)]) + raw


def _bin8(raw: bytes) -> bytes:
    return b"\xa0" + bytes([len(raw)]) + raw


def _list8(*items: bytes) -> bytes:
    body = b"".join(items)
    return b"\xc0" + bytes([len(body) + 1, len(items)]) + body


def _map8(*pairs: tuple[bytes, bytes]) -> bytes:
    body = b"".join(k + v for k, v in pairs)
    return b"\xc1" + bytes([len(body) + 1, 2 * len(pairs)]) + body


HOSTILE = {  # legal AMQP 1.0 that proton cannot make Python values of, and bytes that are no message
    "subject not UTF-8": _sections(_section(0x73, _list8(b"\x40", b"\x40", b"\x40", _str8(b"\xff\xfe"))),
                                   _section(0x75, _bin8(b"odd subject"))),
    "string body not UTF-8": _section(0x77, _str8(b"odd \xff body")),
    "property not UTF-8": _sections(_section(0x74, _map8((_str8(b"k"), _str8(b"\xff")))), _section(0x75, _bin8(b"p"))),
    "map key that is a list": _sections(_section(0x74, _map8((_list8(b"\x40"), _str8(b"v")))),
                                        _section(0x75, _bin8(b"list key"))),
    "map key that is a map": _sections(_section(0x74, _map8((_map8(), _str8(b"v")))),
                                       _section(0x75, _bin8(b"map key"))),
    "garbage bytes": b"\xff\xfe this is no AMQP message",
    "huge message": _section(0x75, b"\xb0" + (32 * 1024 * 1024).to_bytes(4, "big") + b"h" * (32 * 1024 * 1024)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_peer_cannot_wedge_the_binding(tmp_path, start_bridged, case):
    """One odd delivery, then 20 ordinary ones: every ordinary one written, the odd one marked or refused,
    no traceback, no binding_failed, no reconnect."""
    peer = ProtonPeer(count=20, first=HOSTILE[case])
    try:
        out = tmp_path / "peer.log"
        cfg = amqp10_config(f"amqp10://127.0.0.1:{peer.port}", "orders", out, format="json")
        cfg["broker"]["max_message_size"] = 16 * 1024 * 1024  # the huge one is past it
        bridged = start_bridged(cfg)
        wait_until(lambda: len(peer.outcomes) >= 21, 60, "21 outcomes at the peer")
        records = [json.loads(line) for line in read_lines(out)]
        ordinary = [r["body"] for r in records if r.get("body", "").startswith("m-")]
        assert ordinary == [f"m-{i:06d}" for i in range(20)]
        odd = [r for r in records if not str(r.get("body", "")).startswith("m-")]
        if case == "huge message":
            assert not odd and bridged.count("message_dead_lettered") == 1
            assert peer.outcomes.count("rejected") == 1
        else:
            assert len(odd) == 1 and "bridged_error" in odd[0]["properties"], odd
            assert set(peer.outcomes) == {"accepted"}
        text = bridged.stderr_path.read_text()
        assert "Traceback" not in text and bridged.count("binding_failed") == 0
        assert bridged.count("reconnect_scheduled") == 0 and bridged.count("broker_refused") == 0
    finally:
        peer.close()


# -- bridged tail and bridged publish over AMQP 1.0 (#26) ----------------------------------------------------------


def test_tail_does_not_pretend_to_browse_rabbitmq_and_consume_takes_only_what_it_printed(broker, uid, amqp10_broker):
    """RabbitMQ 3.x answers a browsing link as if it browsed and then holds the messages: tail refuses it in one
    line, taking nothing; --consume --count 2 takes exactly the two it printed."""
    queue = f"bridged.test.{uid}"
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.queues.add(queue)
    for i in range(5):
        broker.publish("", queue, f"q-{i}")
    url = f"{amqp10_broker}//amq/queue/{queue}"
    refused = tool("tail", url, "--count", "1")
    assert refused.returncode == 2 and refused.stdout == "", refused
    assert refused.stderr.count("\n") == 1 and "does not browse" in refused.stderr and "--consume" in refused.stderr
    assert "guest:guest" not in refused.stderr
    assert queue_counts(queue) == (5, 0)
    taken = tool("tail", url, "--consume", "--count", "2", "-f", "{body}")
    assert (taken.returncode, taken.stdout.split()) == (0, ["q-0", "q-1"]), taken.stderr
    wait_until(lambda: queue_counts(queue) == (3, 0), 30, "three left, none held")


def test_publish_is_read_back_whole_and_every_outcome_is_counted(broker, uid, amqp10_broker):
    """publish over AMQP 1.0: an independent proton receiver reads every property back; a peer that rejects
    every other message makes it say so and exit 5."""
    from tests.integration.amqp10peer import receive

    queue = f"bridged.test.{uid}"
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.queues.add(queue)
    sent = tool("publish", f"{amqp10_broker}//amq/queue/{queue}", '{"n": 1}', "--count", "3", "--persistent",
                "--subject", "notifications.info", "-H", "tenant=t1", "--property", "message_id=m-1",
                "--property", "correlation_id=c-1", "--property", "content_type=application/json",
                "--property", "expiration=600000")  # fmt: skip
    assert (sent.returncode, sent.stdout.strip()) == (0, "3 sent, 3 accepted"), sent.stderr
    got = receive(f"{amqp10_broker}", f"/amq/queue/{queue}", 3, 30)
    assert len(got) == 3
    message = got[0]
    assert bytes(message.body) == b'{"n": 1}' and message.subject == "notifications.info"
    assert (message.id, message.correlation_id, message.content_type) == ("m-1", "c-1", "application/json")
    assert message.durable and message.properties == {"tenant": "t1"}
    peer = ProtonPeer(count=0, answers=("accepted", "rejected"))
    try:
        half = tool("publish", f"amqp10://127.0.0.1:{peer.port}/orders", "x", "--count", "4")
    finally:
        peer.close()
    assert (half.returncode, half.stdout.strip()) == (5, "4 sent, 2 accepted, 2 rejected"), half.stderr
    assert [answer for _, answer in peer.received] == ["accepted", "rejected"] * 2


def test_a_consuming_tail_killed_with_a_full_stdout_takes_only_what_it_printed(broker, uid, amqp10_broker):
    """tail --consume whose reader stopped reading: its pipe fills and it blocks with one message in hand
    (credit 1). kill -9: everything it did not print is back in the queue, nothing unacked."""
    queue, count = f"bridged.test.{uid}", 1000
    broker.channel.queue_declare(queue, durable=True, auto_delete=False)
    broker.queues.add(queue)
    for i in range(count):
        broker.publish("", queue, f"k-{i:05d}-" + "x" * 200)
    reader, writer = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "bridged", "tail", f"{amqp10_broker}//amq/queue/{queue}",
                             "--consume", "-f", "{body}"], stdout=writer)  # fmt: skip
    os.close(writer)
    try:
        wait_until(lambda: pipe_full(reader), 60, "tail blocked on a full pipe")
    finally:
        proc.kill()
        proc.wait(30)
    with os.fdopen(reader, "rb") as pipe:
        printed = [line for line in pipe.read().splitlines() if line.endswith(b"x")]
    assert 0 < len(printed) < count
    # Everything it did not print is back, nothing is held. The one message in hand may have been printed
    # whole with its settlement not yet sent when SIGKILL came: it comes again (at least once), never lost.
    rest = count - len(printed)
    wait_until(lambda: queue_counts(queue) in ((rest, 0), (rest + 1, 0)), 30, "the rest ready again, none held")
