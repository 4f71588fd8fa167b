"""Syslog messages: the RFC 5424, RFC 3164 or syslog(3) header for a line, and the size cap.

Shared by the sinks that speak syslog (plain syslog, RELP): each adds only
its transport's framing.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence

from bridged.config import SinkConfig
from bridged.log import get_logger
from bridged.sinks.base import LineMeta

TRUNCATION_MARKER = b"...[truncated]"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 5424 MSGID: 1-32 printable US-ASCII characters.
MSGID_MAX = 32


@functools.lru_cache(maxsize=1024)  # per line, and a stream has few distinct event types
def _msgid(event_type: str | None) -> bytes:
    if not event_type:
        return b"-"
    text = event_type[:MSGID_MAX]
    if not (text.isascii() and text.isprintable() and " " not in text):
        text = "".join(c for c in text if 33 <= ord(c) <= 126)
    return text.encode("ascii") or b"-"


def truncate_json(line: bytes, limit: int) -> bytes:
    """A JSON object line too long for *limit*, as a smaller JSON object that says so.

    Cutting the text would leave invalid JSON that a log pipeline drops or
    mis-parses; this keeps a valid record with the start of the original.
    """
    skeleton = b'{"bridged_truncated":true,"size":%d,"head":""}' % len(line)
    room = limit - len(skeleton)
    head = line[: max(0, room)].decode("utf-8", "ignore")
    while True:
        encoded = json.dumps(head, ensure_ascii=True).encode("ascii")
        if len(encoded) - 2 <= room or not head:
            break
        head = head[: max(0, len(head) - (len(encoded) - 2 - room) - 1)]
    return skeleton[:-3] + encoded + b"}"


class SyslogMessages:
    """Builds syslog messages: severity from the notification's priority, event_type as the RFC 5424 MSGID."""

    def __init__(self, config: SinkConfig) -> None:
        self._config = config
        self._hostname = (socket.gethostname().split(".")[0] or "-").encode("ascii", "replace")
        self._pris = [f"<{config.facility * 8 + severity}>".encode() for severity in range(8)]
        self._severity_map = {p.upper(): s for p, s in config.severity_map.items()}
        self._tag = config.tag.encode("ascii")
        self._log = get_logger(sink=config.name)

    def messages(self, lines: Sequence[bytes], meta: Sequence[LineMeta] | None) -> Iterator[bytes]:
        """One message per line, its header stamped once for the batch, each cut to max_size."""
        middle, with_msgid = self.stamp()
        header = self.header
        for i, line in enumerate(lines):
            yield self.message(header(middle, with_msgid, meta[i] if meta is not None else None), line)

    def stamp(self) -> tuple[bytes, bool]:
        """The batch's header middle part (after PRI, before MSGID) and whether MSGID follows."""
        now = time.time()
        pid = str(os.getpid()).encode()
        protocol = self._config.protocol
        if protocol == "rfc5424":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
            return b"1 %s %s %s %s " % (stamp.encode(), self._hostname, self._tag, pid), True
        tm = time.localtime(now)
        stamp = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
        if protocol == "rfc3164":
            return b"%s %s %s[%s]: " % (stamp.encode(), self._hostname, self._tag, pid), False
        return b"%s %s[%s]: " % (stamp.encode(), self._tag, pid), False  # local: no hostname

    def _severity(self, priority: str | None) -> int:
        if priority is None:
            return self._config.severity
        found = self._severity_map.get(priority)
        if found is None:
            found = self._severity_map.get(priority.upper(), self._config.severity)
        return found

    def header(self, middle: bytes, with_msgid: bool, meta: LineMeta | None) -> bytes:
        priority, event_type = (meta.priority, meta.event_type) if meta is not None else (None, None)
        pri = self._pris[self._severity(priority)]
        if with_msgid:
            return b"%s%s%s - " % (pri, middle, _msgid(event_type))
        return pri + middle

    def message(self, header: bytes, line: bytes) -> bytes:
        """Header plus line, cut to max_size: JSON stays valid JSON, text ends with a marker."""
        message = header + line
        limit = self._config.max_size
        if len(message) > limit:
            room = max(0, limit - len(header))
            if line[:1] == b"{":
                message = header + truncate_json(line, room)
            else:
                keep = max(0, room - len(TRUNCATION_MARKER))
                message = header + line[:keep].decode("utf-8", "ignore").encode("utf-8") + TRUNCATION_MARKER
            self._log.warning("line_truncated", size=len(line), max_size=limit)
        return message
