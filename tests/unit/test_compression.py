"""Compressed bodies (kombu's `compression` header) are inflated before formatting, with a bound; others are marked."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import zlib

import pytest
from kombu import compression as kombu_compression

from bridged.compression import MAX_INFLATED, Uninflatable, compressed, inflate
from bridged.formats import make_formatter
from bridged.redact import DEFAULT_REDACT_KEYS, Redactor
from tests.unit.helpers import make_delivery

TOKEN = "gAAAAABl-live-keystone-token"
NOTIFICATION = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(
    {"event_type": "compute.instance.create.end", "priority": "INFO", "payload": {"id": 1},
     "_context_auth_token": TOKEN})}).encode()  # fmt: skip


@pytest.mark.parametrize("codec", ["gzip", "zlib", "bzip2", "lzma", "xz"])
def test_what_kombu_compresses_is_formatted_readable_and_redacted(codec):
    """kombu (as oslo.messaging's kombu_compression uses it) compresses; the oslo line shows the notification."""
    body, content_type = kombu_compression.compress(NOTIFICATION, codec)
    delivery = make_delivery(body, application_headers={"compression": content_type, "trace": "t-1"})
    assert compressed(delivery)
    inflate(delivery)
    assert delivery.body == NOTIFICATION
    assert delivery.properties["application_headers"] == {"trace": "t-1"}
    line = make_formatter("oslo", "nova", Redactor(DEFAULT_REDACT_KEYS))(delivery)
    record = json.loads(line)
    assert record["event_type"] == "compute.instance.create.end" and record["payload"] == {"id": 1}
    assert TOKEN.encode() not in line


@pytest.mark.parametrize(("codec", "data"), [("gzip", gzip.compress(b"{}")), ("application/x-bz2", bz2.compress(b"{}")),
                                             ("xz", lzma.compress(b"{}"))])  # fmt: skip
def test_real_gzip_files_and_each_content_type_are_read(codec, data):
    delivery = make_delivery(data, application_headers={"compression": codec})
    inflate(delivery)
    assert delivery.body == b"{}" and "application_headers" not in delivery.properties


@pytest.mark.parametrize(
    ("codec", "data", "why"),
    [
        ("gzip", b"not zlib at all", "corrupt zlib data"),
        ("gzip", zlib.compress(NOTIFICATION)[:-10], "truncated zlib data"),
        ("bzip2", b"BZh9 nope", "corrupt bzip2 data"),
        ("lzma", lzma.compress(NOTIFICATION)[:20], "truncated lzma data"),
        ("snappy", b"x", "unknown compression 'snappy'"),
        (b"\xff\xfe", b"x", "unknown compression"),
    ],
)
def test_what_cannot_be_inflated_says_why(codec, data, why):
    delivery = make_delivery(data, application_headers={"compression": codec})
    with pytest.raises(Uninflatable, match=why):
        inflate(delivery)
    assert delivery.body == data  # left as it came: written marked


def test_a_compression_bomb_is_refused_without_inflating_it_whole():
    bomb = zlib.compress(b"\0" * (MAX_INFLATED + 1024), 9)  # about 65 KB that would become 64 MiB and more
    assert len(bomb) < 100_000
    delivery = make_delivery(bomb, application_headers={"compression": "application/x-gzip"})
    with pytest.raises(Uninflatable, match="inflates to more than"):
        inflate(delivery)


def test_an_uncompressed_delivery_is_left_alone():
    assert not compressed(make_delivery(b"{}"))
    assert not compressed(make_delivery(b"{}", application_headers={"other": 1}))
