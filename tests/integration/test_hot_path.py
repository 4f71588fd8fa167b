"""The consumer's fast path leans on py-amqp internals: fail loudly when a release changes them; the fallback works."""

from __future__ import annotations

import socket

import amqp

from bridged.amqpio import (
    CONNECTION_INTERNALS,
    FAST_PATH_ENV,
    TRANSPORT_INTERNALS,
    decode_properties_basic,
    fast_path_fits,
    frame_reader,
    tolerate_undecodable_properties,
)  # fmt: skip
from tests.integration.conftest import BROKER_HOST, base_config, wait_lines


def test_the_py_amqp_internals_of_the_fast_path_exist(broker, uid, monkeypatch):
    """Read-ahead, frame dispatch without timeouts, tolerant property decoding: all still fit this py-amqp."""
    conn = amqp.Connection(BROKER_HOST, userid="guest", password="guest")
    conn.connect()
    try:
        missing = [name for name in TRANSPORT_INTERNALS if not hasattr(conn.transport, name)]
        missing += [name for name in CONNECTION_INTERNALS if not hasattr(conn, name)]
        assert not missing, f"py-amqp {amqp.__version__} changed what the fast path uses: {missing}"
        assert fast_path_fits(conn)
        assert decode_properties_basic is not None, f"py-amqp {amqp.__version__}: serialization.decode_properties_basic"
        assert tolerate_undecodable_properties(), f"py-amqp {amqp.__version__}: GenericContent._load_properties"
        channel = conn.channel()
        channel.auto_decode = False
        queue = f"bridged.test.{uid}"
        broker.queues.add(queue)
        channel.queue_declare(queue, auto_delete=True)
        got: list[bytes] = []
        channel.basic_consume(queue, callback=lambda message: got.append(message.body), no_ack=True)
        for i in range(3):
            broker.publish("", queue, f"m{i}")
        monkeypatch.setenv(FAST_PATH_ENV, "0")
        assert not frame_reader(conn)[1]
        monkeypatch.setenv(FAST_PATH_ENV, "")  # only 0 turns it off: a typo must not slow bridged down
        read, fast = frame_reader(conn)
        assert fast
        for _ in range(50):
            if len(got) == 3:
                break
            try:
                read(conn, 0.2)
            except TimeoutError:
                pass
        assert got == [b"m0", b"m1", b"m2"]
    finally:
        conn.collect()


def test_the_fallback_through_drain_events_delivers_everything(broker, uid, tmp_path, start_bridged):
    """With the fast path off, bridged reads through py-amqp's public API: slower, complete, and it says so."""
    exchange, out = f"test.hot.{uid}", tmp_path / "out.log"
    broker.exchanges.add(exchange)
    broker.queues.add(f"bridged.test.{uid}")
    config = base_config({"f": {"type": "file", "path": str(out)}},
                         {"b": {"exchange": exchange, "exchange_type": "direct", "routing_keys": ["k"],
                                "queue": f"bridged.test.{uid}", "sink": "f"}})  # fmt: skip
    bridged = start_bridged(config, env={FAST_PATH_ENV: "0"})
    bridged.wait_event("consuming")
    for i in range(500):
        broker.publish(exchange, "k", f"m{i}")
    assert wait_lines(out, 500) == [f"m{i}" for i in range(500)]
    assert bridged.count("amqp_fast_path_off") == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_side_channel_calls_mid_stream_lose_and_repeat_nothing(broker, uid, tmp_path, start_bridged):
    """The queue's depth read every 0.1 s (a passive declare: py-amqp awaits its reply reading the buffer the
    DeliveryReader shares, dispatching the deliveries it meets) while 20,000 messages stream in, some with
    header tables and some bodies of several frames (py-amqp's to join): every one written once, in order."""
    queue, out = f"bridged.test.{uid}", tmp_path / "out.log"
    broker.queues.add(queue)
    config = base_config({"f": {"type": "file", "path": str(out)}},
                         {"b": {"exchange": "amq.direct", "exchange_type": "direct", "routing_keys": [queue],
                                "queue": queue, "sink": "f"}},
                         metrics={"listen": f"127.0.0.1:{free_port()}", "backlog_interval": 0.1})  # fmt: skip
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    count, big = 20_000, 300_000  # a 300 kB body spans three frames of 128 kB
    expected = [f"m{i}" + ("B" * big if i % 2000 == 999 else "") for i in range(count)]
    conn = amqp.Connection(BROKER_HOST, userid="guest", password="guest")  # no confirms: as fast as it goes
    conn.connect()
    try:
        channel = conn.channel()
        for i, body in enumerate(expected):
            headers = {"application_headers": {"seq": i % 7}} if i % 3 == 0 else {}
            channel.basic_publish(amqp.Message(body, delivery_mode=2, **headers), exchange="amq.direct",
                                  routing_key=queue)  # fmt: skip
    finally:
        conn.close()
    assert wait_lines(out, count) == expected
    assert bridged.count("reconnect_scheduled") == 0  # no frame went astray: the connection held
