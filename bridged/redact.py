"""Keep secrets out of the sinks: replace the values of keys that name a secret.

OpenStack notifications carry them in predictable places: the request
context (``_context_auth_token``, ``_context_service_catalog`` from older
oslo.messaging publishers, and every RPC message) and payload fields such as
``admin_pass``. A key is secret when its lower-cased name contains one of the
configured words, at any depth of the body. The formats parse a JSON body
anyway; walking its keys to see that nothing needs masking is cheap (about
2 us for a nova notification), and only a body that needs it is rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

# Substrings of key names, compared lower-cased. Taken from what OpenStack
# services put in notifications and from oslo.utils' mask_password list.
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password", "passwd", "pswd", "passphrase", "adminpass", "admin_pass", "new_pass",
    "secret", "token", "credential", "private_key", "privatekey", "encryption_key",
    "sslkey", "fernetkey", "catalog", "authorization", "cookie",
)  # fmt: skip

# Key names repeat from message to message; past this many, new ones are not remembered.
MAX_CACHED_KEYS = 10_000
# Deeper than any real notification; a hostile body nested further is refused
# as a whole (the caller writes a marked, redacted placeholder instead).
MAX_DEPTH = 200


class Redactor:
    """Finds and masks secret keys in parsed JSON values."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = tuple(dict.fromkeys(w.lower() for w in words))
        self._secret_cache: dict[str, bool] = {}
        self._plain: set[str] = set()  # keys seen and found not secret

    def is_secret(self, key: str) -> bool:
        found = self._secret_cache.get(key)
        if found is None:
            lowered = key.lower()
            found = any(word in lowered for word in self.words)
            if len(self._secret_cache) < MAX_CACHED_KEYS:  # a hostile body must not grow these forever
                self._secret_cache[key] = found
                if not found:
                    self._plain.add(key)
        return found

    def needs(self, value: Any, depth: int = 0) -> bool:
        """True when *value* holds a secret key with a live value (the hot path: no copy).

        A value already masked by the publisher (modern oslo.messaging sends
        ``"_context_auth_token": "***"``), null, empty or a boolean is left alone,
        so such messages keep the fast path that copies their text as is. Keys
        already known to be plain are skipped with one set difference.
        """
        kind = type(value)
        if kind is dict:
            if not self._plain.issuperset(value):  # a C loop, no set built: the usual case for payloads
                cache = self._secret_cache
                for key in value.keys() - self._plain:
                    secret = cache.get(key)
                    if secret is None:
                        secret = type(key) is str and self.is_secret(key)
                    if secret and not _harmless(value[key]):
                        return True
            items: Any = value.values()
        elif kind is list:
            items = value
        else:
            return False
        if depth >= MAX_DEPTH:
            return True
        for item in items:
            if type(item) in _CONTAINERS and self.needs(item, depth + 1):
                return True
        return False

    def redact(self, value: Any, depth: int = 0) -> Any:
        """*value* with every secret key's live value replaced by REDACTED.

        Only the dicts and lists on the way to a secret are copied; the rest
        is shared with *value* (a payload without secrets is not rebuilt).
        """
        if depth > MAX_DEPTH:
            raise ValueError("nested too deeply to redact")
        kind = type(value)
        if kind is not dict and kind is not list:
            return value
        if not self.needs(value, depth):
            return value
        if kind is list:
            return [self.redact(item, depth + 1) for item in value]
        copy = dict(value)
        for key, item in value.items():
            if type(key) is str and self.is_secret(key):
                if not _harmless(item):
                    copy[key] = REDACTED
            elif type(item) in _CONTAINERS:
                copy[key] = self.redact(item, depth + 1)
        return copy


_CONTAINERS = frozenset((dict, list))


def _harmless(value: Any) -> bool:
    """Null, a boolean, an empty string or one already masked with asterisks or our marker."""
    if value is None or value is True or value is False:
        return True
    if type(value) is str:
        return not value.strip("*") or value == REDACTED
    return False
