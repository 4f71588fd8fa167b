"""The worker's promise, over a scripted stub session and in-memory sinks: settled only after every sink took it.

No broker and no threads: each test runs the worker's loop in the test's own
thread, with a session that plays a script (deliveries, a lost connection,
the stop) and records what the worker settled, rejected and closed. Every
event (sink writes, settles) goes to one shared journal, so the order is
what is asserted.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import yaml as pyyaml

from bridged.config import BindingConfig, Config, parse_config
from bridged.delivery import Delivery
from bridged.sinks import LineMeta, SinkClosed, SinkDone, SinkError
from bridged.sources.session import CONNECTION, Deliver, Stopped
from bridged.sources.worker import EXIT_OUTPUT_CLOSED, BindingWorker

Journal = list[tuple[str, Any]]


def config(heartbeat: float = 30, **binding: Any) -> Config:
    """One binding writing to sinks a and b; batches of 3 that never come due by time (batch_delay 60 s)."""
    yaml = {
        "broker": {"heartbeat": heartbeat},
        "reconnect": {"initial_delay": 0.001, "max_delay": 0.002},
        "sinks": {"a": {"type": "stdout"}, "b": {"type": "stdout"}},
        "bindings": {"nova": {"exchange": "nova", "sinks": ["a", "b"], "batch_size": 3, "batch_delay": 60,
                              **binding}},
    }  # fmt: skip
    return parse_config(pyyaml.safe_dump(yaml), "test.yaml", {})


class MemorySink:
    """Takes lines into the journal; fails the next *failures* writes (taking *taken* lines of the first)."""

    wants_meta = False
    progress = 0

    def __init__(self, name: str, journal: Journal) -> None:
        self.name = name
        self.journal = journal
        self.lines: list[bytes] = []
        self.failures = 0
        self.taken_on_failure = 0
        self.closed_for_good = False
        self.done_after: int | None = None  # a tool's output: takes this many lines, then SinkDone

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        if self.closed_for_good:
            raise SinkClosed("reader gone")
        if self.done_after is not None and len(self.lines) + len(lines) > self.done_after:
            raise SinkDone("has its count")
        if self.failures:
            self.failures -= 1
            taken = self.taken_on_failure
            self.lines.extend(lines[:taken])
            self.journal.append((f"write {self.name}", [*lines[:taken]]))
            raise SinkError("disk full", taken=taken)
        self.lines.extend(lines)
        self.journal.append((f"write {self.name}", list(lines)))

    def probe(self) -> str | None:
        return None

    def reopen(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


Action = list[Delivery] | BaseException | Callable[[], None] | str
WAIT = "wait"  # an action: nothing arrives for as long as the worker waits (until a sink retry is due)


class StubSession:
    """Plays a script, one action per pump: deliveries to hand over, an exception to raise, WAIT, or a call."""

    def __init__(self, script: list[Action], deliver: Deliver, journal: Journal) -> None:
        self.script = script
        self.deliver = deliver
        self.journal = journal
        self.consuming = True
        self.log_fields: dict[str, Any] = {}

    def pump(self, timeout: float) -> None:
        if not self.script:
            raise AssertionError("the script ran out before the worker was stopped")
        action = self.script.pop(0)
        if action == WAIT:
            time.sleep(timeout)
            return
        if isinstance(action, BaseException):
            raise action
        if callable(action):
            action()
            return
        for delivery in action:
            self.deliver(delivery)

    def settle(self, tag: int) -> None:
        self.journal.append(("settle", tag))

    def reject(self, tag: int) -> None:
        self.journal.append(("reject", tag))

    def backlog(self) -> tuple[int, int] | None:
        return None

    def keepalive(self) -> None:
        self.journal.append(("keepalive", None))

    def close(self, clean: bool) -> None:
        self.journal.append(("close", clean))


class StubSource:
    """Opens one scripted session per connection attempt."""

    def __init__(self, scripts: list[list[Action]], journal: Journal) -> None:
        self.scripts = scripts
        self.journal = journal

    def connect_budget(self) -> float:
        return 1.0

    def open(self, url: str, deliver: Deliver, stop: threading.Event) -> StubSession:
        if not self.scripts:
            raise Stopped()
        self.journal.append(("open", url))
        return StubSession(self.scripts.pop(0), deliver, self.journal)

    def endpoint(self, url: str) -> tuple[str, int]:
        return "127.0.0.1", 1

    def classify(self, exc: BaseException) -> str | None:
        return CONNECTION if isinstance(exc, ConnectionError) else None

    def describe(self, exc: BaseException) -> str:
        return str(exc)


def messages(first: int, count: int, redelivered: bool = False, **properties: Any) -> list[Delivery]:
    return [Delivery(f"m{tag}".encode(), "nova", "notifications.info", redelivered, tag, properties)
            for tag in range(first, first + count)]  # fmt: skip


class Run:
    """A worker over stub sinks a and b and a stub source, run to its end in this thread."""

    def __init__(self, scripts: list[list[Action]], heartbeat: float = 30, **binding: Any) -> None:
        self.journal: Journal = []
        cfg = config(heartbeat, **binding)
        self.binding: BindingConfig = cfg.bindings["nova"]
        self.a, self.b = MemorySink("a", self.journal), MemorySink("b", self.journal)
        self.fatal: list[int] = []
        source = StubSource(scripts, self.journal)
        self.worker = BindingWorker(self.binding, cfg.broker, cfg.reconnect, [self.a, self.b], source,
                                    lambda worker, code: self.fatal.append(code))  # fmt: skip

    def stop(self) -> None:
        self.worker.stop()

    def run(self) -> Journal:
        self.worker.run()
        return self.journal


def test_a_batch_is_settled_once_every_sink_wrote_it():
    """Three deliveries fill a batch: a writes, b writes, then one settle covers the newest tag."""
    run = Run([[messages(1, 3)]])
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    journal = run.run()
    assert journal == [("open", run.worker.broker.urls[0]), ("write a", [b"m1", b"m2", b"m3"]),
                       ("write b", [b"m1", b"m2", b"m3"]), ("settle", 3), ("close", True)]  # fmt: skip
    assert run.worker.stats.acked == 3


def test_a_failing_sink_holds_the_batch_and_nothing_is_given_twice():
    """b fails twice, taking one line each time: no settle until it took all; a writes once; b only gets the rest."""
    run = Run([[messages(1, 3), WAIT, WAIT]])
    run.b.failures, run.b.taken_on_failure = 2, 1
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    journal = run.run()
    writes = [entry for entry in journal if entry[0].startswith("write")]
    assert writes == [("write a", [b"m1", b"m2", b"m3"]), ("write b", [b"m1"]), ("write b", [b"m2"]),
                      ("write b", [b"m3"])]  # fmt: skip
    assert [entry for entry in journal if entry[0] == "settle"] == [("settle", 3)]
    assert journal.index(("settle", 3)) > journal.index(("write b", [b"m3"]))
    assert run.a.lines == run.b.lines == [b"m1", b"m2", b"m3"]
    assert sum(run.worker.stats.sink_failures.values()) == 2


def test_stopping_writes_and_settles_what_is_held():
    """Two deliveries (below the batch size, not yet due) are written and settled before a clean close."""
    run = Run([[messages(1, 2)]])
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    journal = run.run()
    assert journal[-3:] == [("write b", [b"m1", b"m2"]), ("settle", 2), ("close", True)]


def test_a_lost_connection_writes_the_held_batch_unsettled_and_connects_again():
    """The connection fails with two deliveries held: they are written, none is settled, the next session reads on.

    (A queue that survived redelivers them: a duplicate at most one batch long. One that did not, a non-durable
    queue on a broker restart, would otherwise lose them.)
    """
    run = Run([[messages(1, 2), ConnectionError("broker gone")], [messages(1, 3)]])
    run.worker.source.scripts[1].append(run.stop)  # type: ignore[attr-defined]
    journal = run.run()
    first_close = journal.index(("close", False))
    assert journal[1:first_close] == [("write a", [b"m1", b"m2"]), ("write b", [b"m1", b"m2"])]
    batch = [b"m1", b"m2", b"m3"]
    assert journal[first_close + 1 :] == [("open", run.worker.broker.urls[0]), ("write a", batch),
                                          ("write b", batch), ("settle", 3), ("close", True)]  # fmt: skip
    assert run.worker.stats.reconnects["connection"] == 1


def test_a_session_that_was_up_is_reopened_at_once_and_one_that_fails_at_once_backs_off(monkeypatch):
    """Lost after STABLE_SESSION: the next open follows at once; lost at once: after the reconnect backoff."""
    from bridged.sources import worker as worker_module

    clock = [100.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])

    def later() -> None:
        clock[0] += worker_module.STABLE_SESSION

    run = Run([[later, ConnectionError("lost")], [ConnectionError("lost again")], []])
    run.worker.source.scripts[2].append(run.stop)  # type: ignore[attr-defined]
    waits: list[float] = []
    monkeypatch.setattr(run.worker.stop_requested, "wait", lambda delay: waits.append(delay) or False)
    run.run()
    assert waits[0] == 0.0
    assert 0 < waits[1] <= run.worker.reconnect.initial_delay


def test_filtered_messages_are_settled_with_the_batch_but_never_written():
    run = Run([[messages(1, 1), [Delivery(b"m2", "nova", "compute.x", False, 2, {})], messages(3, 2)]],
              filter={"keep": {"routing_key": ["notifications.*"]}})  # fmt: skip
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    journal = run.run()
    assert ("write a", [b"m1", b"m3", b"m4"]) in journal and ("settle", 4) in journal
    assert run.worker.stats.filtered == 1 and run.worker.stats.acked == 3


def test_a_message_redelivered_too_often_is_rejected_not_written():
    """max_redeliveries 2: a quorum queue's x-delivery-count of 3 sends it to the dead-letter exchange."""
    poison = messages(1, 1, redelivered=True, application_headers={"x-delivery-count": 3})
    run = Run([[poison, messages(2, 1)]], max_redeliveries=2)
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    journal = run.run()
    assert ("reject", 1) in journal
    assert run.a.lines == [b"m2"] and ("settle", 2) in journal
    assert run.worker.stats.dead_lettered == 1


def test_a_formatter_failure_gives_a_marked_line_and_the_batch_goes_on():
    run = Run([[messages(1, 1, application_headers={"k": object()}), messages(2, 2)]], format="{amqp_headers}")
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    run.run()
    assert len(run.a.lines) == 3 and run.worker.stats.acked == 3


def test_a_closed_output_ends_the_worker_with_its_exit_code_and_settles_nothing():
    """stdout's reader went away (`| head`): the held batch stays unsettled (back to the queue), exit code 4."""
    run = Run([[messages(1, 3)]])
    run.b.closed_for_good = True
    journal = run.run()
    assert run.fatal == [EXIT_OUTPUT_CLOSED] and run.worker.ended
    assert not [entry for entry in journal if entry[0] == "settle"]
    assert journal[-1] == ("close", False)


def test_an_output_that_has_its_count_ends_the_worker_with_0_and_settles_only_what_it_took():
    """`bridged tail --consume --count 3`, batches of one: three written and settled, the fourth left unsettled."""
    run = Run([[messages(1, 1), messages(2, 1), messages(3, 1), messages(4, 1)]], batch_size=1)
    run.a.done_after = 3
    journal = run.run()
    assert run.fatal == [0] and run.worker.ended
    assert [tag for event, tag in journal if event == "settle"] == [1, 2, 3]
    assert run.a.lines == [b"m1", b"m2", b"m3"] and journal[-1] == ("close", False)


def test_an_undecodable_delivery_is_written_marked():
    """The marker joins what could be read of the properties (py-amqp's undecodable ones: nothing)."""
    broken = Delivery(b"body", "nova", "k", False, 1, {"read": 1}, error="undecodable AMQP properties: x")
    run = Run([[[broken], *[messages(2, 2)]]], format="json")
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    run.run()
    assert json.loads(run.a.lines[0])["properties"] == {"read": 1, "bridged_error": "undecodable AMQP properties: x"}


@pytest.mark.parametrize("failures", [1, 3])
def test_sink_failures_never_lead_to_a_settle_before_the_write(failures):
    """Whatever fails and in which order, a settle always follows the write of each line it covers, in both sinks."""
    run = Run([[messages(1, 3), *[WAIT] * failures, messages(4, 3), WAIT]])
    run.a.failures = failures
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    journal = run.run()
    written: dict[str, int] = {"a": 0, "b": 0}
    for event, value in journal:
        if event.startswith("write"):
            written[event[-1]] += len(value)
        if event == "settle":
            assert written["a"] >= value and written["b"] >= value, journal


def test_a_compressed_body_is_written_inflated_and_a_corrupt_one_marked():
    """kombu_compression: the line holds the notification; a body that cannot be inflated is written marked."""
    good = Delivery(zlib.compress(b'{"n": 1}'), "nova", "k", False, 1, {"application_headers": {"compression": "gzip"}})
    bad = Delivery(b"\x00broken", "nova", "k", False, 2, {"application_headers": {"compression": "gzip"}})
    run = Run([[[good, bad], messages(3, 1)]], format="json")
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    journal = run.run()
    first, second = (json.loads(line) for line in run.a.lines[:2])
    assert first["body"] == {"n": 1} and "headers" not in first["properties"]
    assert second["bridged_error"].startswith("corrupt zlib data") and second["body"] == "\\x00broken"
    assert ("settle", 3) in journal and run.worker.stats.format_failures == 1


class SlowSink(MemorySink):
    """Takes *seconds* over each write, answering as it goes (progress); gives up at once when aborted."""

    def __init__(self, name: str, journal: Journal, seconds: float) -> None:
        super().__init__(name, journal)
        self.seconds = seconds
        self.aborted = False

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if self.aborted:
                self.journal.append(("aborted", None))
                raise SinkError("aborted")
            self.progress += 1
            time.sleep(0.01)
        super().write(lines, meta, batch)

    def abort(self) -> None:
        self.aborted = True


def test_a_slow_write_keeps_the_session_alive_and_is_not_wedged():
    """A sink taking 10 heartbeat ticks: the session gets heartbeats meanwhile, and the binding is not wedged."""
    run = Run([[messages(1, 3)]], heartbeat=0.4)  # ticks of 0.1 s
    slow = SlowSink("a", run.journal, 1.0)
    run.worker.sinks = (slow, run.b)
    run.worker.source.scripts[0].append(run.stop)  # type: ignore[attr-defined]
    wedged: list[bool] = []
    grace = 0.3  # the wedge test's slack (the worker runs in this thread here: its due time is what counts)
    watcher = threading.Thread(target=lambda: [wedged.append(time.monotonic() > run.worker.due_by + grace)
                                               or time.sleep(0.05) for _ in range(15)])  # fmt: skip
    run.worker._keepalive.start()
    watcher.start()
    journal = run.run()
    watcher.join()
    beats = [entry for entry in journal if entry[0] == "keepalive"]
    assert len(beats) >= 5, journal
    assert not any(wedged)
    assert ("settle", 3) in journal and journal.index(("settle", 3)) > journal.index(beats[-1])


def test_a_stop_during_a_slow_write_aborts_it_and_settles_nothing():
    """SIGTERM while a sink answers slowly: the write gives up within a tick or two, the batch goes back."""
    run = Run([[messages(1, 3)]], heartbeat=0.4)
    slow = SlowSink("a", run.journal, 30.0)
    run.worker.sinks = (slow, run.b)
    run.worker._keepalive.start()
    threading.Timer(0.3, run.stop).start()
    started = time.monotonic()
    journal = run.run()
    assert time.monotonic() - started < 2.0
    assert ("aborted", None) in journal and not [entry for entry in journal if entry[0] == "settle"]
    assert journal[-1] == ("close", True)
