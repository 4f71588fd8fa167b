"""A file sink whose path is built from message fields: /var/log/bridged/{publisher_id}/{event_type}.log.

Every value is sanitised into one harmless path component (no `/`, no
`..`, no control character, at most 64 characters), so the built path always
stays under the fixed directory before the first field, and no link below
that directory is ever followed (beneath.py). A file name longer than Linux
allows is shortened (its start, a hash, its extension). A path that cannot
hold a file (a link, a file where a directory should be) sends its lines to
the fallback file instead, logged once, and the rest of the batch goes on.
At most max_open_files files are open at once (least recently used closed
first); each is a FileSink, so it follows renames by inode and reopens on HUP.

A batch spreads over several files. A file that fails keeps what it took;
the lines of the batch already in their files are remembered (by position,
under the batch's identity, which the worker keeps while it holds the
batch), so the retry writes only the rest: no line twice, none lost.
"""

from __future__ import annotations

import os
import re
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from bridged.log import get_logger
from bridged.sinks.appender import FileSink
from bridged.sinks.base import LineMeta, SinkError, probe_directory
from bridged.sinks.beneath import UNUSABLE, Beneath, shorten

META_FIELDS = ("binding", "exchange", "routing_key", "event_type", "publisher_id", "priority")
PATH_FIELDS = (*META_FIELDS, "year", "month", "day", "hour", "date")
# One path component: these characters pass, every other run becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")
MAX_COMPONENT = 64
# A batch's lines fall into this many distinct paths before the path cache is cleared.
MAX_CACHED_PATHS = 10_000
# Held batches remembered at once: one per binding sharing the sink, plus a few abandoned ones.
MAX_HELD_BATCHES = 64
# A path found unusable is tried again after this long (someone may have fixed it); its lines go to the
# fallback file meanwhile. At most this many such paths are remembered (and logged) at once.
UNUSABLE_RECHECK = 60.0
MAX_UNUSABLE = 1024
# The widest value each date field gives.
_DATE_WIDTHS = {"year": 4, "month": 2, "day": 2, "hour": 2, "date": 10}


class PathTemplateError(ValueError):
    """A path template with an unknown field, or no fixed directory before the first field."""


def parse_path_template(template: str) -> tuple[str, list[tuple[str, str | None]]]:
    """The fixed base directory and the (literal, field) parts; raises PathTemplateError."""
    try:
        parts = [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]
    except ValueError as exc:
        raise PathTemplateError(f"invalid path template: {exc}") from None
    for _, field in parts:
        if field is not None and field not in PATH_FIELDS:
            raise PathTemplateError(f"unknown field {{{field[:40]}}}; fields: {', '.join(PATH_FIELDS)}")
    base = os.path.dirname(template[: template.index("{")])
    if not base or base in (".", "/"):
        raise PathTemplateError(
            "needs a fixed directory before the first {field} (e.g. /var/log/bridged/{event_type}.log)"
        )
    return os.path.normpath(base), parts


def longest_name(template: str) -> int:
    """The most bytes one component of a path built from *template* can have (Linux allows NAME_MAX)."""
    _, parts = parse_path_template(template)
    longest = current = 0
    for literal, field in parts:
        for piece in literal.split(os.sep)[:-1]:
            longest, current = max(longest, current + len(piece.encode())), 0
        current += len(literal.split(os.sep)[-1].encode())
        if field is not None:
            current += _DATE_WIDTHS.get(field, MAX_COMPONENT)
    return max(longest, current)


def sanitise(value: str | None) -> str:
    """One path component from any value: never empty, never '.', '..' or hidden, no separator."""
    text = _UNSAFE.sub("_", value or "")[:MAX_COMPONENT].lstrip(".")
    return text or "_"


class PathTemplateSink:
    """Appends each line to the file its message's fields name."""

    wants_meta = True
    progress = 0

    def __init__(self, name: str, template: str, max_open_files: int, opener: Callable[..., FileSink] = FileSink,
                 fsync: bool = False, fallback_path: str | None = None) -> None:  # fmt: skip
        self.name = name
        self.base, self._parts = parse_path_template(template)
        self._beneath = Beneath(self.base)
        # Where the lines go whose own path cannot hold a file.
        self.fallback = fallback_path or os.path.join(self.base, "_unfiled.log")
        self._unusable: OrderedDict[str, float] = OrderedDict()  # path -> when to try it again
        self._log = get_logger(sink=name)
        fields = [field for _, field in self._parts if field is not None]
        used = [field for field in fields if field in META_FIELDS]
        self._meta_key: Callable[[LineMeta], Any] = attrgetter(*used) if used else (lambda meta: None)
        self._dated = any(field not in META_FIELDS for field in fields)
        self._max_open = max_open_files
        self._opener = opener
        self._fsync = fsync  # each file's FileSink syncs its part of a batch: one sync per file per batch
        self._files: OrderedDict[str, FileSink] = OrderedDict()
        self._paths: dict[Any, str] = {}
        self._lock = threading.Lock()
        # Per held batch (one per binding sharing this sink), by the batch's identity: the
        # positions of its lines already in their files.
        self._progress: OrderedDict[object, set[int]] = OrderedDict()

    def path_for(self, meta: LineMeta, when: time.struct_time) -> str:
        """The file for one line: cached by the values of the fields the template uses (the hot path)."""
        key = (self._meta_key(meta), when.tm_year, when.tm_yday, when.tm_hour) if self._dated else self._meta_key(meta)
        path = self._paths.get(key)
        if path is None:
            values = {field: getattr(meta, field) for field in META_FIELDS}
            values.update(
                year=f"{when.tm_year:04d}",
                month=f"{when.tm_mon:02d}",
                day=f"{when.tm_mday:02d}",
                hour=f"{when.tm_hour:02d}",
                date=f"{when.tm_year:04d}-{when.tm_mon:02d}-{when.tm_mday:02d}",
            )
            built = "".join(literal + (sanitise(values[field]) if field else "") for literal, field in self._parts)
            path = os.sep.join(shorten(part) for part in os.path.normpath(built).split(os.sep))
            if not path.startswith(self.base + os.sep):  # cannot happen after sanitise; checked anyway
                path = self.fallback
            if len(self._paths) >= MAX_CACHED_PATHS:
                self._paths.clear()
            self._paths[key] = path
        return path

    def write(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None = None, batch: object = None) -> None:
        assert meta is not None and len(meta) == len(lines)
        when = time.gmtime()
        now = time.monotonic()
        with self._lock:
            done: set[int] = (self._progress.get(batch) if batch is not None else None) or set()
            groups: dict[str, list[int]] = {}
            for position, line_meta in enumerate(meta):
                if position not in done:
                    path = self.path_for(line_meta, when)
                    if path in self._unusable and self._unusable[path] > now:
                        path = self.fallback
                    groups.setdefault(path, []).append(position)
            for path, positions in groups.items():
                try:
                    self._write_group(path, positions, lines, done)
                except SinkError as exc:
                    self._remember(batch, done)
                    raise SinkError(str(exc), taken=0) from exc  # retried whole; what is done is skipped
            self._progress.pop(batch, None)

    def _write_group(self, path: str, positions: list[int], lines: Sequence[bytes], done: set[int]) -> None:
        """The lines at *positions* into *path*, or into the fallback when *path* cannot hold a file."""
        try:
            self._file(path).write([lines[i] for i in positions])
        except SinkError as exc:
            done.update(positions[: exc.taken])
            cause = exc.__cause__
            if path == self.fallback or not isinstance(cause, OSError) or cause.errno not in UNUSABLE:
                raise
            self._set_aside(path, cause)
            rest = positions[exc.taken :]
            try:
                self._file(self.fallback).write([lines[i] for i in rest])
            except SinkError as fallback_failed:
                done.update(rest[: fallback_failed.taken])
                raise
            done.update(rest)
            return
        done.update(positions)

    def _set_aside(self, path: str, cause: OSError) -> None:
        """*path* cannot hold a file: its lines go to the fallback for a while; said once per path."""
        sink = self._files.pop(path, None)
        if sink is not None:
            sink.close()
        if path not in self._unusable:
            self._log.error("path_unusable", path=path, reason=cause.strerror or str(cause), fallback=self.fallback)
        self._unusable[path] = time.monotonic() + UNUSABLE_RECHECK
        self._unusable.move_to_end(path)
        while len(self._unusable) > MAX_UNUSABLE:
            self._unusable.popitem(last=False)

    def _remember(self, batch: object, done: set[int]) -> None:
        if batch is None:
            return  # no identity to know the retry by: it is written whole again
        self._progress[batch] = done
        self._progress.move_to_end(batch)
        while len(self._progress) > MAX_HELD_BATCHES:  # batches given up (their connection dropped)
            self._progress.popitem(last=False)

    def _file(self, path: str) -> FileSink:
        sink = self._files.get(path)
        if sink is not None:
            self._files.move_to_end(path)
            return sink
        while len(self._files) >= self._max_open:
            if not self._evict():
                break
        beneath = self._beneath if path.startswith(self.base + os.sep) else None
        sink = self._opener(self.name, path, fsync=self._fsync, beneath=beneath)
        self._files[path] = sink
        return sink

    def _evict(self) -> bool:
        """Close the least recently used file that holds no cut line (its rest must reach it first)."""
        for path, sink in self._files.items():
            if not sink.holds_cut_line():
                del self._files[path]
                sink.close()
                return True
        return False

    def open_files(self) -> int:
        return len(self._files)

    def probe(self) -> str | None:
        return probe_directory(self.base, f"cannot create files under {self.base}")

    def reopen(self) -> None:
        with self._lock:
            for sink in self._files.values():
                sink.reopen()

    def abort(self) -> None:
        pass  # writes to files are system calls

    def close(self) -> None:
        with self._lock:
            for sink in self._files.values():
                sink.close()
            self._files.clear()
            self._beneath.close()
