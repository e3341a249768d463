"""Go's value syntaxes that Kanto's config parsing relies on, reproduced exactly.

Kanto is written in Go, so what counts as a boolean, an integer, a duration or a size is
what Go's `strconv` and `time.ParseDuration` and CM's size regex accept. Python's
`int()`/`float()` accept more (spaces, underscores, Unicode digits, `inf`), so they are never
used on input directly.

`Size` is the one reading of a size (spec §2.3): the text as written, which Kanto compares,
reports and our labels record, and the bytes an engine is given; Kanto's `-1` (memorySwap)
is an explicit `UNLIMITED` without bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

_MAX_DIGITS = 20  # more than any int64 has (19)
_DECIMAL = re.compile(r"[+-]?[0-9]+", re.ASCII)
# CM's size syntax: `^(\d+(\.\d+)*) ?([kKmMgG])$`; Go's \d is ASCII and `$` is end of text.
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)*) ?([kKmMgG])", re.ASCII)
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def parse_bool(text: str) -> bool | None:
    """Go `strconv.ParseBool`: the value, or None when Go would return an error."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    return None


def parse_int(text: str, *, lo: int = INT64_MIN, hi: int = INT64_MAX) -> int | None:
    """Go `strconv.ParseInt(text, 10, bits)` / `Atoi`: None on a syntax or range error."""
    if not _DECIMAL.fullmatch(text):
        return None
    # A number of thousands of digits is out of range anyway; `int()` would even refuse it
    # (ValueError beyond 4,300 digits), so it is never converted.
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        return None
    value = -int(digits) if text.startswith("-") else int(digits)
    return value if lo <= value <= hi else None


class SizeError(ValueError):
    """Not a size in Kanto's syntax; the message names the value."""


@dataclass(frozen=True, slots=True)
class Size:
    """A memory or log size: `text` as written (`"100M"` and `"102400k"` differ to Kanto)
    and the `bytes` it stands for; `bytes` is None for `UNLIMITED` (Kanto's `-1`)."""

    text: str
    bytes: int | None

    @property
    def unlimited(self) -> bool:
        return self.bytes is None

    @property
    def engine_bytes(self) -> int:
        """What an engine is given: the bytes, or -1 for unlimited (Docker's and CM's word)."""
        return -1 if self.bytes is None else self.bytes

    @classmethod
    def parse(cls, text: str, *, allow_unlimited: bool = False) -> Size:
        """CM's `SizeToBytes`: `100M`, `1.5g`, `200 m` (k/m/g = powers of 1024).

        A unit is mandatory. `1.2.3M` matches CM's regex but fails Go's ParseFloat, so it is
        invalid too, as is a number too large for a float64. `-1` is `UNLIMITED` if
        `allow_unlimited` (Kanto allows it for memorySwap only). Raises SizeError.
        """
        if allow_unlimited and text == UNLIMITED.text:
            return UNLIMITED
        problem = f"invalid size {text!r}: expected a number and a unit k, m or g"
        match = _SIZE.fullmatch(text)
        if match is None or match.group(1).count(".") > 1:
            raise SizeError(problem)
        number = float(match.group(1))
        if math.isinf(number):
            raise SizeError(problem)
        size = number * _SIZE_UNITS[match.group(2).lower()]
        # Go converts an out-of-range float to int64 without error; saturate instead.
        count = INT64_MAX if math.isinf(size) or size >= INT64_MAX else int(size)
        return cls(text, count)

    @classmethod
    def from_bytes(cls, count: int) -> Size:
        """The shortest exact Kanto text for `count` bytes (`104857600` -> `100M`)."""
        for letter, factor in (("G", 1024**3), ("M", 1024**2)):
            if count >= factor and count % factor == 0:
                return cls(f"{count // factor}{letter}", count)
        kib = Decimal(count) / 1024
        return cls(f"{format(kib.normalize(), 'f')}K", count)

    @classmethod
    def from_engine(cls, text: str) -> Size:
        """A size as Docker reports it (go-units `RAMInBytes`: `104857600`, `100m`,
        `10MiB`), in its shortest exact Kanto text. Raises SizeError."""
        match = _ENGINE_SIZE.match(text.strip())
        if match is None:
            raise SizeError(f"invalid size {text!r}")
        unit = match.group(2)
        return cls.from_bytes(
            int(Decimal(match.group(1)) * (_ENGINE_UNITS[unit.lower()] if unit else 1))
        )


UNLIMITED = Size("-1", None)

# What Docker itself accepts for log sizes (go-units RAMInBytes): unit optional.
_ENGINE_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_ENGINE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds from a Go duration string (`1h2m3.5s`, `250ms`, `-1s`, `0`). Raises ValueError."""
    value = text.strip()
    sign = 1.0
    if value[:1] in "+-" and value:
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    if value == "0":
        return 0.0
    if not value:
        raise ValueError("empty duration")
    total = 0.0
    position = 0
    while position < len(value):
        match = _DURATION_PART.match(value, position)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return sign * total


def duration_string(seconds: int) -> str:
    """Go's `time.Duration.String()` for whole seconds: `0s`, `30s`, `3m0s`, `1h0m0s`."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    rest = abs(seconds)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"
