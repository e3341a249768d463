"""Go-syntax edge cases that `make mutation` found untested (docs/testing.md).

Equivalent mutants left alive in `cua.containers.gosyntax`:
- `duration_string`: `seconds <= 0` or `< 1` for `< 0` in the sign (0 is returned before).
- `Size.from_bytes`: `format(..., "F")` for `"f"` (they differ only for NaN and infinity).
- `Size.parse`: `size > INT64_MAX` for `>=` (a float is never exactly 2**63 - 1).
- `parse_int`: `X` added to the characters stripped (the text is digits and a sign by then),
  or `>=` for `>` against 20 digits (a number of 20 digits is out of every int64 range).
"""

from __future__ import annotations

import pytest

from cua.containers.gosyntax import Size, SizeError, duration_string, parse_go_duration

pytestmark = pytest.mark.unit


def test_one_second() -> None:
    assert duration_string(1) == "1s"
    assert duration_string(-1) == "-1s"


@pytest.mark.parametrize(
    ("count", "text"),
    [(1024**3, "1G"), (1024**2, "1M"), (1024, "1K"), (1536, "1.5K"), (1024000, "1000K")],
)
def test_size_from_bytes_exactly_one_unit_and_whole_kib(count: int, text: str) -> None:
    assert Size.from_bytes(count) == Size(text, count)


def test_an_engine_size_error_names_the_value() -> None:
    with pytest.raises(SizeError, match=r"^invalid size 'ten'$"):
        Size.from_engine("ten")


@pytest.mark.parametrize(("text", "seconds"), [("+1s", 1.0), ("-1s", -1.0), ("+0", 0.0)])
def test_a_signed_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "+", "-", "X1s"])
def test_no_duration(text: str) -> None:
    with pytest.raises(ValueError, match=r"^(empty duration|invalid duration 'X1s')$"):
        parse_go_duration(text)


def test_a_size_too_large_for_int64_saturates() -> None:
    assert Size.parse("99999999999g").bytes == 2**63 - 1


@pytest.mark.parametrize("text", ["1x", "9" * 400 + "k"])  # not a size; too large a float
def test_a_size_error_names_the_value(text: str) -> None:
    with pytest.raises(SizeError) as caught:
        Size.parse(text)
    assert str(caught.value) == f"invalid size {text!r}: expected a number and a unit k, m or g"


def test_a_duration_of_several_parts_adds_each_once() -> None:
    assert parse_go_duration("1h2m3.5s") == 3723.5
    assert parse_go_duration("1s1s") == 2.0
