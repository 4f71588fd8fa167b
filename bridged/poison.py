"""Counting redeliveries, to set aside a message that keeps coming back.

Quorum queues count for us (the x-delivery-count header, kept across our
restarts). Classic queues only say ``redelivered``: we count those deliveries
ourselves, per message_id or body digest, in a bounded table that lives as
long as the process (so a crash loop is only caught on quorum queues).
Only redelivered messages are looked at: the hot path pays one flag test.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

# Enough for every message a binding can hold in flight many times over;
# the oldest entries go first.
MAX_TRACKED = 10_000


class RedeliveryCounter:
    """How many times has this (redelivered) message been delivered before?"""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes | str, int] = OrderedDict()

    def redeliveries(self, message: Any) -> int:
        """Deliveries before this one: the broker's count if it keeps one, else ours."""
        headers = message.properties.get("application_headers") or {}
        count = headers.get("x-delivery-count")
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        key = message.properties.get("message_id") or _digest(message.body)
        seen = self._seen.pop(key, 0) + 1
        self._seen[key] = seen
        if len(self._seen) > MAX_TRACKED:
            self._seen.popitem(last=False)
        return seen

    def forget(self, message: Any) -> None:
        key = message.properties.get("message_id") or _digest(message.body)
        self._seen.pop(key, None)


def _digest(body: bytes | str) -> bytes:
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    return hashlib.blake2b(data, digest_size=16).digest()
