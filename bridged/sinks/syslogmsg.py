"""Syslog messages: their settings, the RFC 5424, RFC 3164 or syslog(3) header for a line, and the size cap.

Shared by the sinks that speak syslog (plain syslog, RELP): each adds only
its transport's address and framing.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridged import configkit as ck
from bridged.log import get_logger
from bridged.sinks.base import LineMeta, SinkConfig

# RFC 5424 section 6.2.1 facility names and codes.
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
    "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
# RFC 5424 section 6.2.1 severities, with the spellings people also write.
SYSLOG_SEVERITIES = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7,
    "emergency": 0, "critical": 2, "error": 3, "warn": 4,
}  # fmt: skip
# oslo.messaging notification priorities (upper-cased) -> syslog severity.
DEFAULT_SEVERITY_MAP = {
    "CRITICAL": 2, "ERROR": 3, "WARN": 4, "WARNING": 4,
    "AUDIT": 5, "INFO": 6, "SAMPLE": 6, "DEBUG": 7,
}  # fmt: skip
# A stock rsyslog keeps a message of up to 8096 bytes, header included (its default maxMessageSize,
# on imuxsock, imudp, imtcp and imrelp alike; measured with rsyslogd 8.2302): a longer one is cut
# there, mid-JSON. Raise both together for big notifications (rsyslog: global(maxMessageSize=...)).
DEFAULT_MAX_SIZE = 8096


@dataclass(frozen=True)
class SyslogSinkConfig(SinkConfig):
    """What every syslog-speaking sink has: address, message format, severity, size, timeout."""

    address: str = "/dev/log"
    facility: int = SYSLOG_FACILITIES["user"]
    tag: str = "bridged"
    protocol: str = "rfc5424"
    max_size: int = DEFAULT_MAX_SIZE  # bytes per message, header included; longer ones are cut
    timeout: float = 5.0
    severity: int = SYSLOG_SEVERITIES["info"]  # for messages that carry no known priority
    severity_map: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SEVERITY_MAP))


def syslog_settings(section: ck.Section, protocols: tuple[str, ...], default_protocol: str) -> dict[str, Any]:
    """The message settings of a syslog-speaking sink's *section*, as SyslogSinkConfig keywords."""
    return {
        "facility": SYSLOG_FACILITIES[section.get("facility", ck.choice(tuple(SYSLOG_FACILITIES)), "user")],
        "tag": section.get("tag", _syslog_tag, "bridged"),
        "protocol": section.get("protocol", ck.choice(protocols), default_protocol),
        "max_size": section.get("max_size", ck.integer(480, 1 << 20), DEFAULT_MAX_SIZE),
        "timeout": section.get("timeout", ck.number(0, strict=True), 5.0),
        "severity": SYSLOG_SEVERITIES[section.get("severity", ck.choice(tuple(SYSLOG_SEVERITIES)), "info")],
        "severity_map": {**DEFAULT_SEVERITY_MAP, **section.get("severity_map", _severity_map, {})},
    }


def _severity_map(value: Any, where: str) -> dict[str, int]:
    """Notification priority -> severity name; priorities compare upper-cased."""
    mapping = ck.mapping(value, where)
    out = {}
    for priority, severity in mapping.items():
        key = ck.name(priority, where).upper()
        out[key] = SYSLOG_SEVERITIES[ck.choice(tuple(SYSLOG_SEVERITIES))(severity, ck.join(where, priority))]
    return out


def _syslog_tag(value: Any, where: str) -> str:
    tag = ck.name(value, where)
    # RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters, no space.
    if len(tag) > 48 or not all(33 <= ord(c) <= 126 for c in tag):
        raise ck.ConfigError(where, f"{tag!r} must be 1-48 printable ASCII characters without spaces")
    return tag


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

    def __init__(self, config: SyslogSinkConfig) -> None:
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
