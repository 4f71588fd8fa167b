"""LineWriter and FileSink on real files: a cut line resumes at the byte, renames and HUP are followed.

A full disk is simulated by a write(2) that stops after a byte budget and
then fails with ENOSPC (the one stand-in here: the rest is real files).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bridged.sinks import FileSink, LineWriter, SinkError
from bridged.sinks import base as sink_base
from bridged.sinks.appender import RENAMED_FILE_GRACE


class Disk:
    """os.write that takes *room* more bytes, then fails with ENOSPC until given more room."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.room: int | None = None  # None: no limit
        self._write = os.write
        monkeypatch.setattr(sink_base.os, "write", self.write)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.room is None:
            return self._write(fd, data)
        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self._write(fd, bytes(data[: self.room]))
        self.room -= written
        return written


def test_a_cut_line_counts_as_taken_and_its_rest_comes_first_next_time(tmp_path, monkeypatch):
    """Room for one and a half lines: one whole line plus the cut one are taken; the rest completes it later."""
    disk = Disk(monkeypatch)
    path = tmp_path / "out.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    writer = LineWriter()
    disk.room = 6 + 3  # "line1\n" and "lin"
    with pytest.raises(OSError) as failure:
        writer.write(fd, [b"line1", b"line2", b"line3"])
    assert failure.value.taken == 2  # type: ignore[attr-defined]
    assert writer.rest == b"e2\n"
    disk.room = None
    writer.write(fd, [b"line3"])  # the worker gives only what was not taken
    os.close(fd)
    assert path.read_bytes() == b"line1\nline2\nline3\n"


def test_a_failure_while_the_rest_is_written_takes_nothing_new(tmp_path, monkeypatch):
    disk = Disk(monkeypatch)
    fd = os.open(tmp_path / "out.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    writer = LineWriter()
    disk.room = 2
    with pytest.raises(OSError):
        writer.write(fd, [b"abcdef"])
    disk.room = 1
    with pytest.raises(OSError) as failure:
        writer.write(fd, [b"next"])
    assert failure.value.taken == 0  # type: ignore[attr-defined]
    assert writer.rest == b"def\n"  # one more byte of the cut line went out
    disk.room = None
    writer.write(fd, [b"next"])
    os.close(fd)
    assert (tmp_path / "out.log").read_bytes() == b"abcdef\nnext\n"


def test_file_sink_reports_what_it_took_and_resumes(tmp_path, monkeypatch):
    disk = Disk(monkeypatch)
    sink = FileSink("f", str(tmp_path / "logs" / "out.log"))
    disk.room = 4
    with pytest.raises(SinkError) as failure:
        sink.write([b"one", b"two"])
    assert failure.value.taken == 1 and "No space left" in str(failure.value)
    disk.room = None
    sink.write([b"two"])
    assert (tmp_path / "logs" / "out.log").read_text() == "one\ntwo\n"


def test_file_sink_follows_a_rename_once_the_new_file_exists(tmp_path):
    """logrotate renames out.log and creates it anew: the next write goes to the new file."""
    path = tmp_path / "out.log"
    sink = FileSink("f", str(path))
    sink.write([b"before"])
    os.rename(path, tmp_path / "out.log.1")
    path.write_bytes(b"")
    sink.write([b"after"])
    assert (tmp_path / "out.log.1").read_text() == "before\n"
    assert path.read_text() == "after\n"


def test_file_sink_keeps_writing_a_renamed_file_until_the_grace_ends(tmp_path, monkeypatch):
    """No new file yet: lines go on to the renamed one for RENAMED_FILE_GRACE, then the path is created again."""
    now = [1000.0]
    monkeypatch.setattr("bridged.sinks.appender.time.monotonic", lambda: now[0])
    path = tmp_path / "out.log"
    sink = FileSink("f", str(path))
    sink.write([b"one"])
    os.rename(path, tmp_path / "out.log.1")
    sink.write([b"two"])  # the grace starts now
    now[0] += RENAMED_FILE_GRACE / 2
    sink.write([b"three"])
    assert not path.exists()
    now[0] += RENAMED_FILE_GRACE / 2 + 0.1
    sink.write([b"four"])
    assert (tmp_path / "out.log.1").read_text() == "one\ntwo\nthree\n"
    assert path.read_text() == "four\n"


def test_file_sink_reopens_on_hup_and_creates_missing_directories(tmp_path):
    path = tmp_path / "a" / "b" / "out.log"
    sink = FileSink("f", str(path))
    sink.write([b"one"])
    os.rename(path, tmp_path / "moved.log")
    sink.reopen()
    sink.write([b"two"])
    assert path.read_text() == "two\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)


def test_an_unwritable_path_is_a_sink_error_naming_it(tmp_path):
    (tmp_path / "file").write_text("")
    sink = FileSink("f", str(tmp_path / "file" / "out.log"))
    with pytest.raises(SinkError, match=r"cannot write .*/file/out\.log: "):
        sink.write([b"x"])


def test_the_probe_finds_what_a_write_would_meet(tmp_path):
    (tmp_path / "file").write_text("")
    assert FileSink("f", str(tmp_path / "new" / "out.log")).probe() is None
    assert "not a directory" in (FileSink("f", str(tmp_path / "file" / "out.log")).probe() or "")
    Path(tmp_path / "dir.log").mkdir()
    assert "not a regular file" in (FileSink("f", str(tmp_path / "dir.log")).probe() or "")
