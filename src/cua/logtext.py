"""Log lines that untrusted input cannot forge or flood (ours).

Text from the network (activityIds, component names, error texts that quote them) reaches
log lines. `quoted()` shows such a value JSON-quoted and cut, the formatter escapes every
control character of a line (a newline cannot start a forged line) and cuts overlong lines,
and `Throttle` lets a repeated warning through a few times per interval and then says how
many were left out.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_LINE", "SafeFormatter", "Throttle", "escape_controls", "quoted"]

MAX_LINE = 4000  # characters of one log message (the traceback, ours, is not cut)
MAX_VALUE = 120  # characters of one untrusted value in a log line

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\u{ord(char):04x}")


def escape_controls(text: str) -> str:
    """`text` on one line: control characters (and line separators) escaped."""
    return _CONTROLS.sub(_escape, text)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more characters)"


def quoted(value: str, limit: int = MAX_VALUE) -> str:
    """An untrusted value for a log line: JSON-quoted (boundaries clear, nothing raw) and
    cut after `limit` characters."""
    return json.dumps(_cut(value, limit), ensure_ascii=False)


class SafeFormatter(logging.Formatter):
    """Every message on one line (control characters escaped) and at most MAX_LINE long."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _cut(escape_controls(record.message), MAX_LINE)
        return super().formatMessage(record)


@dataclass(slots=True)
class _Budget:
    start: float
    passed: int = 0
    held: int = 0


class Throttle:
    """At most `burst` log lines per key per `interval` seconds; the rest are counted and
    summarised in one line by the first call after the interval (or by `flush()`)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._budgets: dict[str, _Budget] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        """Log `message % args` unless `key` used up its lines of the current interval."""
        now = self._clock()
        for name, ended in list(self._budgets.items()):
            if now - ended.start >= self._interval:
                self._summarise(name, ended, level)
                del self._budgets[name]
        budget = self._budgets.setdefault(key, _Budget(now))
        if budget.passed < self._burst:
            budget.passed += 1
            self._logger.log(level, message, *args)
        else:
            budget.held += 1

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)

    def info(self, key: str, message: str, *args: object) -> None:
        self.log(logging.INFO, key, message, *args)

    def flush(self) -> None:
        """Summarise what is held back now (at stop)."""
        for key, budget in self._budgets.items():
            self._summarise(key, budget, logging.WARNING)
        self._budgets.clear()

    def _summarise(self, key: str, budget: _Budget, level: int) -> None:
        if budget.held:
            self._logger.log(
                level,
                "%d more %s message(s) not logged in %.0f s",
                budget.held,
                key,
                self._clock() - budget.start,
            )
            budget.held = 0
