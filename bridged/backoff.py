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
