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


def test_a_cut_line_is_cut_off_at_once_and_given_again_whole(tmp_path, monkeypatch):
    """Room for one and a half lines: one whole line is taken, the half is removed again, the file ends whole."""
    disk = Disk(monkeypatch)
    path = tmp_path / "out.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    writer = LineWriter()
    disk.room = 6 + 3  # "line1\n" and "lin"
    with pytest.raises(OSError) as failure:
        writer.write(fd, [b"line1", b"line2", b"line3"])
    assert failure.value.taken == 1  # type: ignore[attr-defined]
    assert path.read_bytes() == b"line1\n" and writer.rest == b""
    disk.room = None
    writer.write(fd, [b"line2", b"line3"])  # the worker gives what was not taken
    os.close(fd)
    assert path.read_bytes() == b"line1\nline2\nline3\n"


def test_on_a_pipe_the_rest_of_a_cut_line_comes_first_next_time(monkeypatch):
    """stdout may be a pipe, which cannot be cut back: the cut line counts as taken and its rest is owed."""
    disk = Disk(monkeypatch)
    read_end, write_end = os.pipe()
    writer = LineWriter()
    disk.room = 6 + 3
    with pytest.raises(OSError) as failure:
        writer.write(write_end, [b"line1", b"line2", b"line3"])
    assert failure.value.taken == 2 and writer.rest == b"e2\n"  # type: ignore[attr-defined]
    disk.room = 1
    with pytest.raises(OSError) as failure:
        writer.write(write_end, [b"line3"])
    assert failure.value.taken == 0 and writer.rest == b"2\n"  # type: ignore[attr-defined]
    disk.room = None
    writer.write(write_end, [b"line3"])
    os.close(write_end)
    assert os.read(read_end, 100) == b"line1\nline2\nline3\n"


def test_a_file_left_without_a_final_newline_gets_one_before_anything_is_appended(tmp_path):
    """A head left by a crash (or another writer) stays a line of its own: the next record is never glued to it."""
    path = tmp_path / "out.log"
    path.write_bytes(b'{"id": "a"}\n{"id": "cr7a9')
    sink = FileSink("f", str(path))
    sink.write([b'{"id": "b"}'])
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "cr7a9\n{"id": "b"}\n'


def test_a_rest_owed_to_a_file_that_is_reopened_goes_whole_to_the_new_one(tmp_path, monkeypatch):
    """Where a cut line could not be cut back, a reopen (logrotate) finishes it in the old file or moves it whole."""
    disk = Disk(monkeypatch)
    monkeypatch.setattr("bridged.sinks.base._cut_back", lambda fd, part: False)
    path = tmp_path / "out.log"
    sink = FileSink("f", str(path))
    disk.room = 6 + 3
    with pytest.raises(SinkError) as failure:
        sink.write([b"line1", b"line2"])
    assert failure.value.taken == 2
    os.rename(path, tmp_path / "out.log.1")
    sink.reopen()
    disk.room = 0  # still full: the rest cannot reach the old file
    with pytest.raises(SinkError):
        sink.write([b"line3"])
    disk.room = None
    sink.write([b"line3"])
    assert path.read_bytes() == b"line2\nline3\n"  # the cut line whole in the new file, never as a fragment


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


def test_with_fsync_each_batch_is_synced_once_and_new_directories_too(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync
    monkeypatch.setattr("bridged.sinks.appender.os.fdatasync", lambda fd: synced.append("file") or real_fdatasync(fd))
    monkeypatch.setattr("bridged.sinks.appender.os.fsync", lambda fd: synced.append("dir") or real_fsync(fd))
    sink = FileSink("f", str(tmp_path / "a" / "b" / "out.log"), fsync=True)
    sink.write([b"one", b"two"])
    assert synced.count("file") == 1 and synced.count("dir") == 3  # b (the file), a (holds b), tmp (holds a)
    synced.clear()
    sink.write([b"three"])
    assert synced == ["file"]


def test_a_failed_sync_gives_the_whole_batch_again(tmp_path, monkeypatch):
    """fsync failed: the pages may be gone, a second fsync would lie: nothing of the batch counts as taken."""

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    sink = FileSink("f", str(tmp_path / "out.log"), fsync=True)
    monkeypatch.setattr("bridged.sinks.appender.os.fdatasync", failing)
    with pytest.raises(SinkError, match=r"cannot sync .* to disk: Input/output error") as failure:
        sink.write([b"one", b"two"])
    assert failure.value.taken == 0


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
