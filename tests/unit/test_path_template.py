"""File paths built from message fields: always under the base directory, nothing written twice or lost."""

from __future__ import annotations

import os
import time

import pytest

from bridged.formats import LineMeta
from bridged.sinks import PathTemplateSink, SinkError
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


def test_a_failing_file_keeps_what_the_others_took(tmp_path):
    """One of three files fails mid-batch: the retry writes only what is missing, in each file exactly once."""
    sink = PathTemplateSink("t", f"{tmp_path}/logs/{{event_type}}.log", 2)  # fewer open files than paths
    blocker = tmp_path / "logs" / "b.log"
    blocker.mkdir(parents=True)  # a directory where file b.log should be: its writes fail
    lines = [f"line {i}".encode() for i in range(9)]
    meta = [LineMeta(event_type="abc"[i % 3]) for i in range(9)]
    held = object()  # the worker's batch: the same object on every retry
    with pytest.raises(SinkError) as failure:
        sink.write(lines, meta, held)
    assert failure.value.taken == 0
    blocker.rmdir()
    sink.write(lines, meta, held)  # the same held batch again, as the worker retries it
    for name, indexes in (("a", [0, 3, 6]), ("b", [1, 4, 7]), ("c", [2, 5, 8])):
        assert (tmp_path / "logs" / f"{name}.log").read_text().splitlines() == [f"line {i}" for i in indexes]
    assert sink.open_files() <= 2
