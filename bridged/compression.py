"""Bodies compressed by their publisher (kombu's `compression` header), inflated with a bound before formatting.

oslo.messaging's ``[oslo_messaging_rabbit] kombu_compression`` makes kombu
compress every body and say how in a ``compression`` header. Formats,
filters and redaction must see the notification, not base64 of zlib: the
body is inflated first, at most MAX_INFLATED bytes of it (a compression
bomb is refused, never held in memory). kombu's own decompression has no
bound, so it is not used. A body that cannot be inflated is written with
the bridged_error marker, as it came.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from bridged.delivery import Delivery

# Larger than any notification (nova's biggest are tens of KiB; RabbitMQ's default message limit
# is 16 MiB compressed), small enough that a bomb never takes the host's memory.
MAX_INFLATED = 64 * 1024 * 1024
HEADER = "compression"
# zlib's window bits for "zlib or gzip, whichever header the stream has".
_ZLIB_OR_GZIP = 32 + zlib.MAX_WBITS


class Uninflatable(Exception):
    """A compressed body that cannot be inflated (unknown codec, corrupt, truncated, or too large)."""


def _inflate(decompressor: Any, data: bytes, name: str) -> bytes:
    """Run *decompressor* over *data* with the MAX_INFLATED bound; it must reach the end of its stream."""
    try:
        out = decompressor.decompress(data, MAX_INFLATED + 1)
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
        raise Uninflatable(f"corrupt {name} data ({exc})") from None
    if len(out) > MAX_INFLATED:
        raise Uninflatable(f"{name} body inflates to more than {MAX_INFLATED} bytes (refused: a compression bomb?)")
    if not decompressor.eof:
        raise Uninflatable(f"truncated {name} data")
    return bytes(out)


def _zlib(data: bytes) -> bytes:
    return _inflate(zlib.decompressobj(_ZLIB_OR_GZIP), data, "zlib")


def _bz2(data: bytes) -> bytes:
    return _inflate(bz2.BZ2Decompressor(), data, "bzip2")


def _lzma(data: bytes) -> bytes:
    return _inflate(lzma.LZMADecompressor(), data, "lzma")


# kombu's content types and aliases (kombu/compression.py); its "gzip" is a zlib stream.
CODECS: dict[str, Callable[[bytes], bytes]] = {
    "application/x-gzip": _zlib, "gzip": _zlib, "zlib": _zlib,
    "application/x-bz2": _bz2, "bzip2": _bz2, "bzip": _bz2,
    "application/x-lzma": _lzma, "lzma": _lzma, "xz": _lzma,
}  # fmt: skip


def compressed(delivery: Delivery) -> bool:
    """Whether *delivery* says its body is compressed (the hot path: two lookups)."""
    headers = delivery.properties.get("application_headers")
    return type(headers) is dict and HEADER in headers


def inflate(delivery: Delivery) -> None:
    """Replace *delivery*'s body with the inflated one and drop the header that said how; or Uninflatable."""
    headers = delivery.properties["application_headers"]
    codec = headers[HEADER]
    name = codec.decode("utf-8", "replace") if isinstance(codec, bytes) else str(codec)
    inflater = CODECS.get(name)
    if inflater is None:
        raise Uninflatable(f"unknown compression {name[:40]!r} (bridged inflates {', '.join(sorted(CODECS))})")
    body = delivery.body
    delivery.body = inflater(body if isinstance(body, bytes) else bytes(body))
    rest = {key: value for key, value in headers.items() if key != HEADER}
    properties = {**delivery.properties, "application_headers": rest}
    if not rest:
        del properties["application_headers"]
    delivery.properties = properties
