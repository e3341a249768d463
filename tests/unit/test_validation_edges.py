"""`cua.validation` edge cases that `make mutation` found untested (docs/testing.md).

Equivalent mutants left alive in `cua.validation`:
- `convert`: `msgspec.convert` without `strict=True` (True is msgspec's default).
- `_without_nulls`: `not many or value is not None` (a list field that holds an object:
  its nulls dropped or not, the field is refused as "a valid list" all the same).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec
import pytest

from cua.validation import Invalid, _from_msgspec, convert, problems

pytestmark = pytest.mark.unit


class Inner(msgspec.Struct, kw_only=True):
    count: int = 1


class Needs(msgspec.Struct, kw_only=True):
    name: str  # required: a problem the walk does not look for


class Outer(msgspec.Struct, kw_only=True):
    inner: Inner | None = None
    needs: Needs | None = None
    items: list[int] = []
    logins: dict[str, Inner] = {}


class Only(StrEnum):
    ONE = "one"


def test_the_message_is_every_problem_with_its_place() -> None:
    error = Invalid([(("a", 0), "Input should be a valid string"), (("b",), "x")])
    assert str(error) == "('a', 0): Input should be a valid string; ('b',): x"


def test_convert_is_strict_about_types_in_both_dialects() -> None:
    # msgspec's lax mode would read "5" as 5 and "true" as True; Go would not.
    for strict in (True, False):
        with pytest.raises(Invalid) as caught:
            convert({"inner": {"count": "5"}}, Outer, strict=strict)
        assert caught.value.problems == [(("inner", "count"), "Input should be a valid integer")]


def test_convert_names_problems_in_its_dialect() -> None:
    with pytest.raises(Invalid) as caught:
        convert({"items": {}, "logins": {"a": []}}, Outer, strict=True)
    assert caught.value.problems == [
        (("items",), "Input should be a valid array"),
        (("logins", "a"), "Input should be an object"),
    ]


def test_a_problem_the_walk_does_not_see_is_named_by_msgspecs_place() -> None:
    with pytest.raises(Invalid) as caught:
        convert({"needs": {}}, Outer, strict=True)
    assert caught.value.problems == [(("needs",), "Input is not valid")]


@pytest.mark.parametrize(
    "text",
    [
        "Invalid enum value 'v1.2' - at `$.a`",
        "Invalid enum value 'x - at `$.b[7]' - at `$.a`",
    ],
)
def test_the_place_is_read_after_the_value_whatever_it_holds(text: str) -> None:
    # The value's own dots or " - at `$" never become part of the place (it could be a secret).
    assert _from_msgspec(msgspec.ValidationError(text)) == (("a",), "Input is not valid")


@pytest.mark.parametrize(
    ("data", "type_", "expected"),
    [
        ({}, Annotated[list[int], msgspec.Meta(max_length=3)], "Input should be a valid array"),
        ({"a": {}}, dict[str, list[int]], "Input should be a valid array"),
        ([], dict[str, int], "Input should be an object"),
    ],
)
def test_strict_texts_hold_below_annotations_and_mappings(
    data: object, type_: object, expected: str
) -> None:
    assert [text for _, text in problems(data, type_, strict=True)] == [expected]


def test_a_union_member_is_named_by_its_type_in_its_dialect() -> None:
    assert problems(5, list[int] | Inner | str, strict=True) == [
        (("list",), "Input should be a valid array"),
        (("Inner",), "Input should be an object"),
        (("str",), "Input should be a valid string"),
    ]
    assert problems({}, list[int] | str, strict=False)[0] == (
        ("list",),
        "Input should be a valid list",
    )


def test_null_fits_a_union_only_with_none_in_it() -> None:
    assert problems(None, int | None, strict=True) == []
    assert problems(None, str | int, strict=True) == [
        (("str",), "Input should be a valid string"),
        (("int",), "Input should be a valid integer"),
    ]


@pytest.mark.parametrize(
    ("meta", "value", "expected"),
    [
        (msgspec.Meta(ge=1, le=9), 1, []),
        (msgspec.Meta(ge=1, le=9), 9, []),
        (msgspec.Meta(ge=1), 10**6, []),
        (msgspec.Meta(le=9), 10, ["Input should be less than or equal to 9"]),
    ],
)
def test_bounds_are_inclusive_and_each_is_optional(
    meta: msgspec.Meta, value: int, expected: list[str]
) -> None:
    assert [text for _, text in problems(value, Annotated[int, meta], strict=True)] == expected


def test_an_enum_of_one_value_names_it_alone() -> None:
    assert problems("two", Only, strict=True) == [((), "Input should be 'one'")]


def test_nulls_stay_in_a_mapping_that_is_not_a_struct() -> None:
    assert convert({"a": None}, dict[str, int | None], strict=False) == {"a": None}
    assert convert({"a": None}, dict, strict=False) == {"a": None}
