"""File paths built from message fields: always under the base directory, nothing written twice or lost."""

from __future__ import annotations

import errno
import os
import time
from typing import ClassVar

import pytest

from bridged.formats import LineMeta
from bridged.sinks import FileSink, PathTemplateSink, SinkError
from bridged.sinks.paths import PathTemplateError, parse_path_template, sanitise

HOSTILE = ["..", ".", "../../etc/passwd", "/abs/path", "a\x00b", "\n\x1b[31m", "a" * 10_000, "", None, ".hidden",
           "..\\..\\x", "\u202e", "ok.value-1"]  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE)
def test_any_value_becomes_one_harmless_component(value):
    part = sanitise(value)
    assert part and "/" not in part and "\x00" not in part and not part.startswith(".") and len(part) <= 64
    assert part.isprintable() and part.isascii()


def test_built_paths_stay_under_the_base(tmp_path):
    sink = PathTemplateSink("t", f"{tmp_path}/logs/{{publisher_id}}/{{event_type}}-{{date}}.log", 8)
    now = time.gmtime()
    for a in HOSTILE:
        for b in HOSTILE:
            path = sink.path_for(LineMeta(event_type=a, publisher_id=b), now)
            assert path.startswith(f"{tmp_path}/logs/") and os.path.normpath(path) == path


@pytest.mark.parametrize(
    ("template", "message"),
    [("{event_type}.log", "fixed directory"), ("/{event_type}.log", "fixed directory"),
     ("/var/log/{nope}.log", "unknown field {nope}"), ("/var/log/{a", "invalid path template")],
)  # fmt: skip
def test_bad_templates_are_refused(template, message):
    with pytest.raises(PathTemplateError, match=message):
        parse_path_template(template)


class FullOnce(FileSink):
    """A file whose first write fails with ENOSPC (a disk full for a moment)."""

    failed: ClassVar[set[str]] = set()

    def write(self, lines, meta=None, batch=None):  # type: ignore[no-untyped-def]
        if self.path.endswith("b.log") and self.path not in FullOnce.failed:
            FullOnce.failed.add(self.path)
            raise SinkError(f"cannot write {self.path}: No space left on device") from OSError(errno.ENOSPC, "full")
        super().write(lines, meta, batch)


def test_a_failing_file_keeps_what_the_others_took(tmp_path):
    """One of three files fails mid-batch: the retry writes only what is missing, in each file exactly once."""
    sink = PathTemplateSink("t", f"{tmp_path}/logs/{{event_type}}.log", 2, opener=FullOnce)  # fewer open files
    lines = [f"line {i}".encode() for i in range(9)]
    meta = [LineMeta(event_type="abc"[i % 3]) for i in range(9)]
    held = object()  # the worker's batch: the same object on every retry
    with pytest.raises(SinkError) as failure:
        sink.write(lines, meta, held)
    assert failure.value.taken == 0
    sink.write(lines, meta, held)  # the same held batch again, as the worker retries it
    for name, indexes in (("a", [0, 3, 6]), ("b", [1, 4, 7]), ("c", [2, 5, 8])):
        assert (tmp_path / "logs" / f"{name}.log").read_text().splitlines() == [f"line {i}" for i in indexes]
    assert sink.open_files() <= 2


def test_a_path_that_cannot_hold_a_file_sends_its_lines_to_the_fallback(tmp_path):
    """A directory where b.log should be: b's lines go to _unfiled.log, the others to their files, nothing held."""
    sink = PathTemplateSink("t", f"{tmp_path}/logs/{{event_type}}.log", 8)
    (tmp_path / "logs" / "b.log").mkdir(parents=True)
    lines = [f"line {i}".encode() for i in range(6)]
    sink.write(lines, [LineMeta(event_type="ab"[i % 2]) for i in range(6)], object())
    assert (tmp_path / "logs" / "a.log").read_text().splitlines() == ["line 0", "line 2", "line 4"]
    assert (tmp_path / "logs" / "_unfiled.log").read_text().splitlines() == ["line 1", "line 3", "line 5"]


def test_links_below_the_base_are_never_followed(tmp_path):
    """A link as the file, a dangling one, a linked directory: nothing written or created outside the base."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched\n")
    base = tmp_path / "logs"
    base.mkdir()
    (base / "nova.log").symlink_to(outside / "victim.txt")
    (base / "glance.log").symlink_to(outside / "created-by-link.log")  # dangling
    (base / "cinder").symlink_to(outside, target_is_directory=True)
    sink = PathTemplateSink("t", f"{base}/{{event_type}}.log", 8)
    deep = PathTemplateSink("d", f"{base}/{{publisher_id}}/{{event_type}}.log", 8)
    meta = [LineMeta(event_type=name, publisher_id="cinder") for name in ("nova", "glance", "heat")]
    sink.write([b"n", b"g", b"h"], meta, object())
    deep.write([b"x"], [LineMeta(event_type="x", publisher_id="cinder")], object())
    assert (outside / "victim.txt").read_text() == "untouched\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert (base / "heat.log").read_text() == "h\n"
    assert sorted((base / "_unfiled.log").read_text().splitlines()) == ["g", "n", "x"]


def test_a_name_longer_than_linux_allows_is_shortened_the_same_way_every_time(tmp_path):
    template = f"{tmp_path}/logs/{{event_type}}-{{publisher_id}}-{{routing_key}}-{{exchange}}.log"
    sink = PathTemplateSink("t", template, 8)
    meta = LineMeta(event_type="e" * 64, publisher_id="p" * 64, routing_key="r" * 64, exchange="x" * 64)
    sink.write([b"one"], [meta], object())
    sink.write([b"two"], [meta], object())
    (written,) = list((tmp_path / "logs").iterdir())
    assert len(written.name.encode()) <= 255 and written.name.endswith(".log") and written.name.startswith("eeee")
    assert written.read_text() == "one\ntwo\n"
