"""Which RabbitMQ policy bounds a queue, and an exchange's type, read from the management API.

Queues the services declare (queue_declare: passive) have no bound of
bridged's making: while bridged is down they grow until a policy
(max-length, max-length-bytes, message-ttl) stops them. AMQP cannot tell
which policy applies to a queue; RabbitMQ's management API can, with the
same user. `bridged tail` asks it an exchange's type, which AMQP cannot
tell either. Nothing here is needed to run the daemon.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

# RabbitMQ's management plugin (rabbitmq_management) listens here by default.
MANAGEMENT_PORT = 15672
# --check --connect must not hang on a firewall that drops packets.
API_TIMEOUT = 5.0
# What bounds a queue's length or its messages' age.
BOUNDING_KEYS = ("max-length", "max-length-bytes", "message-ttl")
_QUEUE_ARGUMENTS = {"x-max-length": "max-length", "x-max-length-bytes": "max-length-bytes",
                    "x-message-ttl": "message-ttl"}  # fmt: skip
_APPLIES_TO_QUEUES = ("queues", "all", "classic_queues", "quorum_queues")


class ApiUnavailable(Exception):
    """The management API did not answer (plugin off, port closed, refused)."""


@dataclass(frozen=True)
class Bound:
    """What bounds a queue: a policy's (or the queue's own arguments') bounding keys."""

    source: str  # "policy NAME", "operator policy NAME" or "queue arguments"
    limits: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.source} ({', '.join(f'{k} {v}' for k, v in self.limits.items())})"


class ManagementApi:
    """The management API of the broker at an AMQP URL, with that URL's user, password and vhost."""

    def __init__(self, amqp_url: str) -> None:
        parts = urlsplit(amqp_url)
        self.base = f"http://{parts.hostname or 'localhost'}:{MANAGEMENT_PORT}/api"
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        self.vhost = unquote(path) if path else "/"
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _get(self, path: str) -> Any:
        url = f"{self.base}/{path}"  # always http://host:15672/api/...: built here, never taken from outside
        request = urllib.request.Request(url, headers={"Authorization": self._auth})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT) as answer:  # noqa: S310 - http(s) only
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ApiUnavailable(f"HTTP {exc.code} from {self.base}") from None
        except (OSError, ValueError) as exc:
            raise ApiUnavailable(f"{self.base} did not answer ({exc})") from None

    def exchange_type(self, exchange: str) -> str | None:
        """*exchange*'s type (`direct`, `topic`, ...), None if it does not exist; raises ApiUnavailable."""
        declared = self._get(f"exchanges/{quote(self.vhost, safe='')}/{quote(exchange, safe='')}")
        return str(declared.get("type")) if declared else None

    def bound(self, queue: str) -> Bound | None:
        """What bounds *queue* (declared yet or not), or None; raises ApiUnavailable."""
        vhost = quote(self.vhost, safe="")
        found: list[Bound] = []
        for kind, label in (("policies", "policy"), ("operator-policies", "operator policy")):
            policies = self._get(f"{kind}/{vhost}") or []
            applying = [p for p in policies if p.get("apply-to") in _APPLIES_TO_QUEUES and _matches(p, queue)]
            if applying:  # the one with the highest priority applies
                policy = max(applying, key=lambda p: p.get("priority", 0))
                limits = {k: v for k, v in (policy.get("definition") or {}).items() if k in BOUNDING_KEYS}
                if limits:
                    found.append(Bound(f"{label} {policy.get('name')}", limits))
        declared = self._get(f"queues/{vhost}/{quote(queue, safe='')}")
        if declared:
            arguments = declared.get("arguments") or {}
            limits = {name: arguments[key] for key, name in _QUEUE_ARGUMENTS.items() if key in arguments}
            if limits:
                found.append(Bound("queue arguments", limits))
        return found[0] if found else None


def _matches(policy: dict[str, Any], queue: str) -> bool:
    try:
        return re.search(str(policy.get("pattern", "")), queue) is not None
    except re.error:
        return False
