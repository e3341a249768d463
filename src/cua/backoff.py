"""Capped exponential backoff with jitter, for whatever reconnects: the MQTT connection and
the engine's event stream."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Capped exponential backoff with jitter: the n-th delay is uniform in [d/2, d],
    d = min(max, initial * 2**n). Jitter keeps a fleet of devices from reconnecting in step.
    """

    def __init__(
        self, initial: float, maximum: float, rng: Callable[[float, float], float] | None = None
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._attempt = 0
        self._uniform = rng or random.uniform

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self._attempt, 62)))
        self._attempt += 1
        return self._uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0
