"""A token bucket shared by every download of the agent (`update_agent.download_rate_limit`).

Bytes are taken after they were read from the network: a reader that waits for tokens
reads no more, so TCP flow control slows the sender. The bucket holds at most `burst`
tokens (a tenth of a second's worth by default), which keeps the rate smooth; what a reader
got at once (up to a link's 1 MiB) passes a burst at a time (`portions`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

MIN_PORTION = 16 * 1024  # no system call per handful of bytes under a tiny limit


class TokenBucket:
    """`rate` bytes per second for all callers together; `rate <= 0` means no limit."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else rate / 10
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = asyncio.Lock()

    @property
    def limited(self) -> bool:
        return self.rate > 0

    def portions(self, data: memoryview) -> Iterator[memoryview]:
        """`data` a burst at a time (whole when there is no limit), each to `take` before it
        is used: a large read waits for its tokens in steps, not in one long wait."""
        if not self.limited:
            yield data
            return
        step = max(int(self.burst), MIN_PORTION)
        for start in range(0, len(data), step):
            yield data[start : start + step]

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def delay_for(self, count: int) -> float:
        """Seconds to wait before `count` bytes may pass (they are taken now: the balance
        may go negative, so the next caller waits for them too)."""
        if not self.limited:
            return 0.0
        self._refill()
        self._tokens -= count
        return max(0.0, -self._tokens / self.rate)

    async def take(self, count: int) -> None:
        """Wait until `count` bytes may pass. Callers are served in turn (a lock), so one
        large reader cannot starve the others."""
        if not self.limited:
            return
        async with self._lock:
            delay = self.delay_for(count)
            if delay > 0:
                await asyncio.sleep(delay)
