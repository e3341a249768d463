"""Kanto size strings (`100M`, `1.5g`, `200 m`) to bytes and back.

Kanto's syntax (spec §2.3): a decimal number, an optional space and a mandatory unit
letter k/m/g (any case), powers of 1024. It is read by `cua.containers.gosyntax`, the one
parser that validation uses too, so the engine gets the bytes Kanto's CM would compute.
Engines want bytes; inspect gives bytes back, which `bytes_to_size` turns into the shortest
exact Kanto-style string.
"""

from __future__ import annotations

import re
from decimal import Decimal

from cua.containers import gosyntax

# What Docker itself accepts for log sizes (go-units RAMInBytes): unit optional.
_ENGINE_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def size_to_bytes(value: str) -> int:
    """Bytes of a Kanto size string. Raises ValueError naming the value if it is invalid."""
    count = gosyntax.size_to_bytes(value)
    if count is None:
        raise ValueError(f"invalid size {value!r}: expected a number and a unit k, m or g")
    return count


def engine_size_to_bytes(value: str) -> int:
    """Bytes of a size as an engine reports it (`104857600`, `100m`, `10MiB`)."""
    match = _ENGINE_SIZE.match(value.strip())
    if match is None:
        raise ValueError(f"invalid size {value!r}")
    unit = match.group(2)
    return int(Decimal(match.group(1)) * (_UNITS[unit.lower()] if unit else 1))


def bytes_to_size(count: int) -> str:
    """The shortest exact Kanto size string for `count` bytes (`104857600` -> `100M`)."""
    for letter, factor in (("G", 1024**3), ("M", 1024**2)):
        if count >= factor and count % factor == 0:
            return f"{count // factor}{letter}"
    kib = Decimal(count) / 1024
    text = format(kib.normalize(), "f")
    return f"{text}K"
