"""A full disk overlapping the other faults: every confirmed message a whole line of its own, none malformed.

The sinks live on a small tmpfs of the test's own, filled by another file
(a real ENOSPC, with the short writes it brings). While it is full: a
logrotate-style rename and SIGHUP, a kill -9 and restart, a SIGTERM and
restart, and a path-template file's rotation. Afterwards every line of every
file must parse, every confirmed message must be in its sinks, and the
duplicates (redelivered after a crash or a stop) stay within a batch a fault.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Bridged, base_config, fanout_binding, wait_until
from tests.integration.reliability import StreamPublisher, record

DISK_SIZE = "64m"  # room for the whole stream; the filler takes what is left
BATCH = 50  # each binding's batch: what one fault may duplicate
PAD = "z" * 300  # long lines: a short write lands mid-line


class SmallDisk:
    """A tmpfs of the test's own that another file can fill (ENOSPC for every writer) and empty again."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.filler = mount / "filler"

    def fill(self) -> None:
        """Write until ENOSPC, in big pieces and then byte by byte (unbuffered: closing flushes nothing)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for piece in (b"\0" * 65536, b"\0"):
                try:
                    while True:
                        os.write(fd, piece)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)], check=True, timeout=30)
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], timeout=30)


def body(ident: str) -> bytes:
    """An oslo notification: the path-template sink files it by event_type; its id is in the payload."""
    n = int(ident.rsplit("-", 1)[1])
    inner = {"event_type": f"compute.e{n % 3}", "priority": "INFO", "payload": {"id": ident, "pad": PAD}}
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()


def lines_of(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        out.extend(path.read_bytes().decode("utf-8").split("\n")[:-1] if path.exists() else [])
    return out


def ids(lines: list[str]) -> Counter[str]:
    """Each line must be one whole JSON record (a cut or glued line fails here); their message ids."""
    found: Counter[str] = Counter()
    for line in lines:
        record_ = json.loads(line)  # raises on a malformed line
        found[record_["payload"]["id"]] += 1
    return found


def test_a_full_disk_overlapping_rotation_crash_stop_and_path_rotation(broker, start_bridged, uid, small_disk):
    """Each fault while the disk is full; afterwards no line cut, split or glued, none lost, few duplicated."""
    disk = small_disk.mount
    exchange, _, plain = fanout_binding(broker, uid, sink="plain", format="oslo", batch_size=BATCH)
    paths_queue = f"bridged.test.{uid}.paths"
    broker.queues.add(paths_queue)
    templated = {**plain, "queue": paths_queue, "sink": "paths"}
    sinks = {"plain": {"type": "file", "path": str(disk / "out.log")},
             "paths": {"type": "file", "path": f"{disk}/paths/{{event_type}}.log"}}  # fmt: skip
    config = base_config(sinks, {"plain": plain, "templated": templated})
    running: list[Bridged] = [start_bridged(config)]
    running[0].wait_event("consuming", count=2)
    publisher = StreamPublisher(exchange, "", 100_000, prefix=uid, rate=300, body=body)
    publisher.start()

    def during_full_disk(fault: Callable[[], None]) -> None:
        """Fill the disk, let both bindings fail on it, do *fault*, free the disk, let them catch up."""
        bridged = running[-1]
        failures = bridged.count("sink_failed")
        small_disk.fill()
        bridged.wait_event("sink_failed", count=failures + 2)
        fault()
        small_disk.free()
        written = len(publisher.confirmed)
        wait_until(lambda: len(ids(lines_of(all_files()))) >= written, 60, "the stream caught up")

    def all_files() -> list[Path]:
        return sorted(disk.glob("out.log*")) + sorted((disk / "paths").glob("*.log*"))

    def rotate_plain() -> None:
        os.rename(disk / "out.log", disk / "out.log.1")
        running[-1].signal(signal.SIGHUP)
        time.sleep(1)  # the reopen happens while the disk is still full

    def kill_and_restart() -> None:
        running[-1].kill()
        running.append(start_bridged(config))

    def stop_and_restart() -> None:
        assert running[-1].stop(timeout=30) == 0
        running.append(start_bridged(config))

    def rotate_paths() -> None:
        for path in (disk / "paths").glob("*.log"):
            os.rename(path, path.with_suffix(".log.1"))
        running[-1].signal(signal.SIGHUP)
        time.sleep(1)

    faults = [rotate_plain, kill_and_restart, stop_and_restart, rotate_paths]
    try:
        wait_until(lambda: len(publisher.confirmed) > 500, 30, "the stream flowing")
        for fault in faults:
            during_full_disk(fault)
    finally:
        publisher.stop()
        publisher.join(30)
    confirmed = set(publisher.confirmed)
    wait_until(lambda: confirmed <= set(ids(lines_of(sorted(disk.glob("out.log*"))))), 60, "all in the plain file")
    wait_until(lambda: confirmed <= set(ids(lines_of(sorted((disk / "paths").glob("*.log*"))))), 60, "all in paths")
    figures = {}
    for name, files in (("plain", sorted(disk.glob("out.log*"))), ("paths", sorted((disk / "paths").glob("*.log*")))):
        found = ids(lines_of(files))  # every line parses: none cut, split or glued
        assert confirmed <= set(found), f"{name}: lost {len(confirmed - set(found))}"
        duplicates = sum(n - 1 for n in found.values())
        figures[name] = duplicates
        assert duplicates <= BATCH * len(faults), f"{name}: {duplicates} duplicates"
    record("full disk overlapping rename+HUP, kill -9, SIGTERM, path rotation", sent=len(confirmed), lost=0,
           duplicates=figures)  # fmt: skip
