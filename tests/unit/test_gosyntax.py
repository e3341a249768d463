"""Go value syntaxes (strconv.ParseBool/Atoi, CM sizes, Duration.String)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cua.containers.gosyntax import UNLIMITED, Size, SizeError, parse_bool, parse_int

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1k", 1024),
        ("1K", 1024),
        ("100M", 100 * 1024**2),
        ("1.5g", int(1.5 * 1024**3)),
        ("200 m", 200 * 1024**2),
        ("0M", 0),
        ("3.5k", 3584),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert Size.parse(text).bytes == size


@pytest.mark.parametrize(
    "text", ["", "1000", "1", "M", "1MB", "1  M", " 1M", "1M ", "1.2.3M", "-1M", "1e3M",
             "١M", "1M\n", "1b", "1t", "1" + "0" * 400 + "k"],
)  # fmt: skip
def test_invalid_sizes(text: str) -> None:
    with pytest.raises(SizeError):
        Size.parse(text)


def test_huge_size_saturates() -> None:
    assert Size.parse("9" * 300 + "g").bytes == 2**63 - 1


def test_int_range() -> None:
    assert parse_int("9223372036854775807") == 2**63 - 1
    assert parse_int("-9223372036854775808") == -(2**63)
    assert parse_int("9223372036854775808") is None
    assert parse_int("70000", lo=-(2**31), hi=2**31 - 1) == 70000


@pytest.mark.parametrize("sign", ["", "+", "-"])
def test_thousands_of_digits_are_out_of_range_not_an_error(sign: str) -> None:
    # int() refuses more than 4,300 digits (ValueError); Go says "out of range".
    assert parse_int(sign + "9" * 5000) is None
    assert parse_int(sign + "0" * 5000 + "7") == int(sign + "7")


@given(st.text(max_size=12))
def test_never_raise(text: str) -> None:
    assert parse_bool(text) in (True, False, None)
    value = parse_int(text)
    assert value is None or str(value) == str(int(text.lstrip("+")))
    try:
        size = Size.parse(text).bytes
    except SizeError:
        size = None
    assert size is None or size >= 0


def test_unlimited_only_where_allowed() -> None:
    with pytest.raises(SizeError, match="invalid size '-1'"):
        Size.parse("-1")
    unlimited = Size.parse("-1", allow_unlimited=True)
    assert unlimited is UNLIMITED
    assert (unlimited.unlimited, unlimited.bytes, unlimited.engine_bytes) == (True, None, -1)
    assert Size.parse("1M", allow_unlimited=True).engine_bytes == 1024**2
    with pytest.raises(SizeError):
        Size.parse(" -1", allow_unlimited=True)


def test_text_is_kept_as_written() -> None:
    assert Size.parse("200 m") == Size("200 m", 200 * 1024**2)
    assert Size.parse("200 m") != Size.parse("200M")  # Kanto compares the text
