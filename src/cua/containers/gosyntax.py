"""Go's value syntaxes that Kanto's config parsing relies on, reproduced exactly.

Kanto is written in Go, so what counts as a boolean, an integer or a size is what Go's
`strconv` and CM's size regex accept. Python's `int()`/`float()` accept more (spaces,
underscores, Unicode digits, `inf`), so they are never used on input directly.
"""

from __future__ import annotations

import math
import re

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

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
    value = int(text)
    return value if lo <= value <= hi else None


def size_to_bytes(text: str) -> int | None:
    """CM's `SizeToBytes`: `100M`, `1.5g`, `200 m` (k/m/g = powers of 1024); None if invalid.

    A unit is mandatory. `1.2.3M` matches CM's regex but fails Go's ParseFloat, so it is
    invalid too, as is a number too large for a float64.
    """
    match = _SIZE.fullmatch(text)
    if match is None or match.group(1).count(".") > 1:
        return None
    number = float(match.group(1))
    if math.isinf(number):
        return None
    size = number * _SIZE_UNITS[match.group(2).lower()]
    # Go converts an out-of-range float to int64 without error; saturate instead.
    return INT64_MAX if math.isinf(size) or size >= INT64_MAX else int(size)


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
