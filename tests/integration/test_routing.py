"""Routing: what reaches a binding's sink for each exchange type."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import base_config, wait_lines


def _file_binding(uid: str, name: str, tmp_path: Path, **binding: object) -> tuple[dict, dict, Path]:
    path = tmp_path / f"{name}.log"
    sinks = {f"{name}_file": {"type": "file", "path": str(path)}}
    bindings = {name: {"queue": f"bridged.test.{uid}.{name}", "sink": f"{name}_file", **binding}}
    return sinks, bindings, path


def test_topic_binding_with_star_and_hash_patterns(broker, start_bridged, uid, tmp_path):
    """Only keys matching one of the binding's patterns arrive, each once."""
    exchange = f"test.topic.{uid}"
    sinks, bindings, path = _file_binding(
        uid,
        "topic",
        tmp_path,
        exchange=exchange,
        exchange_type="topic",
        routing_keys=["compute.*", "image.#", "exact.key"],
    )
    broker.queues.add(bindings["topic"]["queue"])
    broker.exchanges.add(exchange)
    bridged = start_bridged(base_config(sinks, bindings))
    bridged.wait_event("consuming")
    rejected = ["compute", "compute.a.b", "imagex.a", "exact", "exact.key.more", "other"]
    accepted = ["compute.start", "image", "image.a", "image.a.b.c", "exact.key"]
    for key in rejected + accepted:
        broker.publish(exchange, key, key.encode())
    broker.publish(exchange, "exact.key", b"sentinel")
    lines = wait_lines(path, len(accepted) + 1)
    assert lines == [*accepted, "sentinel"]


def test_direct_binding_with_several_keys(broker, start_bridged, uid, tmp_path):
    """A direct binding receives exactly its listed keys."""
    exchange = f"test.direct.{uid}"
    sinks, bindings, path = _file_binding(
        uid,
        "direct",
        tmp_path,
        exchange=exchange,
        exchange_type="direct",
        routing_keys=["info", "error"],
    )
    broker.queues.add(bindings["direct"]["queue"])
    broker.exchanges.add(exchange)
    bridged = start_bridged(base_config(sinks, bindings))
    bridged.wait_event("consuming")
    for key in ["debug", "info", "warn", "error", "info.x"]:
        broker.publish(exchange, key, key.encode())
    broker.publish(exchange, "error", b"sentinel")
    assert wait_lines(path, 3) == ["info", "error", "sentinel"]


def test_fanout_ignores_routing_keys(broker, start_bridged, uid, tmp_path):
    """Every message published to a fanout exchange arrives, whatever its key."""
    exchange = f"test.fanout.{uid}"
    sinks, bindings, path = _file_binding(uid, "fan", tmp_path, exchange=exchange, exchange_type="fanout")
    broker.queues.add(bindings["fan"]["queue"])
    broker.exchanges.add(exchange)
    bridged = start_bridged(base_config(sinks, bindings))
    bridged.wait_event("consuming")
    for i, key in enumerate(["", "a", "b.c", "#"]):
        broker.publish(exchange, key, f"m{i}".encode())
    assert wait_lines(path, 4) == ["m0", "m1", "m2", "m3"]


def test_two_bindings_on_one_exchange_each_get_a_copy(broker, start_bridged, uid, tmp_path):
    """Two bindings on the same exchange have their own queues and each sees every message."""
    exchange = f"test.shared.{uid}"
    sinks_a, bindings_a, path_a = _file_binding(uid, "a", tmp_path, exchange=exchange, exchange_type="topic")
    sinks_b, bindings_b, path_b = _file_binding(
        uid,
        "b",
        tmp_path,
        exchange=exchange,
        exchange_type="topic",
        format="json",
    )
    broker.queues.update({bindings_a["a"]["queue"], bindings_b["b"]["queue"]})
    broker.exchanges.add(exchange)
    bridged = start_bridged(base_config({**sinks_a, **sinks_b}, {**bindings_a, **bindings_b}))
    bridged.wait_event("consuming", count=2)
    for i in range(50):
        broker.publish(exchange, "k", f"m{i}".encode())
    assert wait_lines(path_a, 50) == [f"m{i}" for i in range(50)]
    lines_b = wait_lines(path_b, 50)
    assert [line.split('"body":"')[1].split('"')[0] for line in lines_b] == [f"m{i}" for i in range(50)]
    assert all('"binding":"b"' in line for line in lines_b)


def test_one_binding_to_two_sinks(broker, start_bridged, uid, tmp_path):
    """sinks: [file, stdout] writes every message to both before acking."""
    exchange = f"test.two.{uid}"
    path = tmp_path / "two.log"
    queue = f"bridged.test.{uid}.two"
    broker.queues.add(queue)
    broker.exchanges.add(exchange)
    config = base_config(
        {"f": {"type": "file", "path": str(path)}, "out": {"type": "stdout"}},
        {"two": {"exchange": exchange, "exchange_type": "fanout", "queue": queue, "sinks": ["f", "out"]}},
    )
    bridged = start_bridged(config)
    bridged.wait_event("consuming")
    for i in range(10):
        broker.publish(exchange, "", f"m{i}".encode())
    expected = [f"m{i}" for i in range(10)]
    assert wait_lines(path, 10) == expected
    assert wait_lines(bridged.stdout_path, 10) == expected
