"""Capped exponential backoff with jitter, for reconnects and sink retries."""

from __future__ import annotations

import random

from bridged.config import ReconnectConfig

# Each delay is drawn from [JITTER_FLOOR * d, d]: bindings that failed together
# (a broker restart) spread their reconnects instead of arriving as one burst.
JITTER_FLOOR = 0.5


class Backoff:
    """Delays initial_delay * multiplier**n, capped at max_delay; reset() after a success."""

    def __init__(self, config: ReconnectConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.attempts = 0
        self._ceiling = config.initial_delay
        self.reset()

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        config = self._config
        ceiling = self._ceiling
        self._ceiling = min(config.max_delay, ceiling * config.multiplier)
        self.attempts += 1
        return self._rng.uniform(JITTER_FLOOR * ceiling, ceiling)

    def reset(self) -> None:
        self.attempts = 0
        self._ceiling = min(self._config.initial_delay, self._config.max_delay)


# Waiting for another service's exchange or queue: check every PROBE_FAST seconds during
# PROBE_FAST_SPELL after a connect (a service declares them as it starts, or again just
# after a broker restart: that is when a fast check saves notifications), then each check
# waits twice as long, up to PROBE_SLOW. Each check of a missing one costs the broker an
# error line (a 404 closes the channel), so a service never deployed costs a few a minute.
PROBE_FAST = 0.5
PROBE_FAST_SPELL = 60.0
PROBE_SLOW = 10.0


class ProbeSchedule:
    """When to check again for something a service has not declared yet; restarts with each connection."""

    def __init__(self, now: float) -> None:
        self._since = now
        self._interval = PROBE_FAST
        self.next_at = now + PROBE_FAST

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def checked(self, now: float) -> None:
        """A check was made (and found something still missing): the next one, a little later past the spell."""
        if now - self._since >= PROBE_FAST_SPELL:
            self._interval = min(PROBE_SLOW, self._interval * 2)
        self.next_at = now + self._interval
