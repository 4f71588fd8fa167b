"""RELP framing (the answers a server sends) and the relp sink's config."""

from __future__ import annotations

import pytest

from bridged.config import ConfigError, parse_config
from bridged.sinks.relp import MAX_TXNR, RelpError, RelpSink, parse_frames

OPEN_ANSWER = (b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
               b"commands=syslog\n")  # fmt: skip


def test_frames_as_rsyslog_sends_them():
    """The open answer (data with LFs), syslog answers, the empty close answer and a serverclose hint."""
    buffer = bytearray(OPEN_ANSWER + b"2 rsp 6 200 OK\n3 rsp 6 200 OK\n4 rsp 0\n0 serverclose 0\n")
    frames = parse_frames(buffer)
    assert [(t, c) for t, c, _ in frames] == [(1, b"rsp"), (2, b"rsp"), (3, b"rsp"), (4, b"rsp"), (0, b"serverclose")]
    assert frames[0][2].endswith(b"commands=syslog") and frames[1][2] == b"200 OK" and frames[3][2] == b""
    assert buffer == b""


def test_a_frame_split_anywhere_waits_for_its_rest():
    """Fed one byte at a time, the same frames come out, each once complete."""
    stream = OPEN_ANSWER + b"2 rsp 6 200 OK\n4 rsp 0\n"
    buffer, frames = bytearray(), []
    for i in range(len(stream)):
        buffer += stream[i : i + 1]
        frames += parse_frames(buffer)
    assert [t for t, _, _ in frames] == [1, 2, 4] and buffer == b""


@pytest.mark.parametrize(
    "garbage",
    [b"HTTP/1.1 400 Bad Request\r\n", b"1 rsp 6 200 OK!", b"1 rsp 5 200 OK\n", b"1 rsp 999999999 x",
     b"1234567890 rsp 0\n", b"1 rsp 0 \n", b"1 r3p 0\n", b"x" * 60, b"1 rsp 00000000001 \n"],
)  # fmt: skip
def test_anything_else_is_a_protocol_error(garbage):
    with pytest.raises(RelpError):
        parse_frames(bytearray(garbage + b"\n" * 2))


def test_txnr_wraps_to_one_after_its_maximum():
    sink = RelpSink.__new__(RelpSink)
    sink._txnr = MAX_TXNR - 1
    assert [sink._next_txnr() for _ in range(3)] == [MAX_TXNR, 1, 2]


def relp_config(sink: str) -> str:
    return f"""
sinks:
  r: {sink}
bindings:
  b: {{exchange: x, sink: r}}
"""


def test_relp_sink_config():
    """The port defaults to 2514; TLS takes the broker's keys; window and protocol are checked."""
    sink = parse_config(relp_config("{type: relp, address: 'tcp://logs.example'}"), "t", {}).sinks["r"]
    assert (sink.address, sink.window, sink.protocol, sink.tls) == ("tcp://logs.example:2514", 128, "rfc5424", None)
    sink = parse_config(relp_config("{type: relp, address: 'tcp://[::1]:20514', window: 8, tls: {verify: false}}"),
                        "t", {}).sinks["r"]  # fmt: skip
    assert sink.address == "tcp://[::1]:20514" and sink.window == 8 and sink.tls is not None and not sink.tls.verify


@pytest.mark.parametrize(
    ("sink", "expected"),
    [
        ("{type: relp}", "sinks.r.address: is required"),
        ("{type: relp, address: 'udp://h:514'}", "sinks.r.address: 'udp://h:514' is not tcp://host"),
        ("{type: relp, address: '/dev/log'}", "is not tcp://host or tcp://host:port"),
        ("{type: relp, address: 'tcp://h', window: 0}", "sinks.r.window"),
        ("{type: relp, address: 'tcp://h', protocol: local}", "sinks.r.protocol"),
        ("{type: relp, address: 'tcp://h', tls: {ca_file: /nonexistent}}", "sinks.r.tls.ca_file"),
        ("{type: syslog, address: 'tcp://h:1', window: 4}", "sinks.r.window"),
    ],
)
def test_relp_config_mistakes_name_the_key(sink, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        parse_config(relp_config(sink), "t", {})
