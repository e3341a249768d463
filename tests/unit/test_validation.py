"""`cua.validation`: msgspec decodes; every problem of a refused input is named, by place."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cua.api.envelope import MessageError, decode
from cua.api.models import DesiredState
from cua.validation import Invalid, _from_msgspec, convert, problems

pytestmark = pytest.mark.unit


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Inner(msgspec.Struct, kw_only=True):
    name: str = ""
    count: Annotated[int, msgspec.Meta(ge=1, le=9)] = 1


class Outer(msgspec.Struct, kw_only=True):
    flag: bool = False
    colour: Colour = Colour.RED
    inner: Inner | None = None
    items: list[Inner] = []
    logins: dict[str, Inner] = {}
    either: str | int = ""
    seconds: str | int | float | None = None


def test_every_problem_in_field_order_with_its_place() -> None:
    data = {
        "logins": {"a": {"count": 0}},
        "items": [{"name": 1}, 5, {"count": 10}],
        "colour": "pink",
        "flag": "yes",
    }
    assert problems(data, Outer, strict=True) == [
        (("flag",), "Input should be a valid boolean"),
        (("colour",), "Input should be 'red', 'green' or 'blue'"),
        (("items", 0, "name"), "Input should be a valid string"),
        (("items", 1), "Input should be an object"),
        (("items", 2, "count"), "Input should be less than or equal to 9"),
        (("logins", "a", "count"), "Input should be greater than or equal to 1"),
    ]


def test_a_union_names_each_of_its_types() -> None:
    assert problems({"either": 1.5, "seconds": []}, Outer, strict=True) == [
        (("either", "str"), "Input should be a valid string"),
        (("either", "int"), "Input should be a valid integer"),
        (("seconds", "str"), "Input should be a valid string"),
        (("seconds", "int"), "Input should be a valid integer"),
        (("seconds", "float"), "Input should be a valid number"),
    ]
    assert problems({"either": 3, "seconds": 1.5}, Outer, strict=True) == []


@pytest.mark.parametrize(
    ("data", "strict", "text"),
    [
        ({"items": {}}, True, "Input should be a valid array"),
        ({"items": {}}, False, "Input should be a valid list"),
        ({"inner": []}, True, "Input should be an object"),
        ({"inner": []}, False, "Input should be a valid dictionary or instance of Inner"),
        ({"logins": []}, False, "Input should be a valid dictionary"),
        ({"inner": {"count": True}}, True, "Input should be a valid integer"),
        ({"colour": True}, True, "Input should be 'red', 'green' or 'blue'"),
    ],
)
def test_the_texts_of_the_two_dialects(data: object, strict: bool, text: str) -> None:
    assert [found for _, found in problems(data, Outer, strict=strict)] == [text]


def test_null_members_are_zero_values_unless_strict() -> None:
    data = {"flag": None, "inner": {"name": None}, "items": [{"name": None}], "logins": None}
    assert convert(data, Outer, strict=False) == Outer(inner=Inner(), items=[Inner()])
    with pytest.raises(Invalid) as caught:
        convert(data, Outer, strict=True)
    assert [loc for loc, _ in caught.value.problems] == [
        ("flag",),
        ("inner", "name"),
        ("items", 0, "name"),
        ("logins",),
    ]


def test_a_null_list_item_stays_a_problem() -> None:
    with pytest.raises(Invalid) as caught:
        convert({"items": [None]}, Outer, strict=False)
    assert caught.value.problems == [
        (("items", 0), "Input should be a valid dictionary or instance of Inner")
    ]


def test_a_problem_only_msgspec_sees_is_named_by_its_place_not_its_value() -> None:
    error = msgspec.ValidationError("Invalid enum value 'hunter2' - at `$.a[...][3].b`")
    assert _from_msgspec(error) == (("a", "...", 3, "b"), "Input is not valid")
    assert _from_msgspec(msgspec.ValidationError("Expected `object`, got `int`")) == (
        (),
        "Input is not valid",
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
_OUTER = st.fixed_dictionaries(
    {},
    optional={
        "flag": st.booleans() | _JSON,
        "colour": st.sampled_from(["red", "pink"]) | _JSON,
        "inner": st.fixed_dictionaries({}, optional={"count": st.integers(-1, 11)}) | _JSON,
        "items": st.lists(st.fixed_dictionaries({}, optional={"name": st.text()}) | _JSON),
        "either": st.text() | st.integers() | _JSON,
        "seconds": st.floats() | _JSON,
    },
)


@given(_OUTER, st.booleans())
def test_the_walk_refuses_exactly_what_msgspec_refuses(data: object, strict: bool) -> None:
    found: list[tuple[object, str]] | None = None
    try:
        convert(data, Outer, strict=strict)
    except Invalid as error:
        found = list(error.problems)
    if found is None:  # (not strict: the walk sees the data with its null members dropped)
        assert not strict or problems(data, Outer, strict=True) == []
    else:
        assert found
        assert all(text != "Input is not valid" for _, text in found)


def test_a_config_entry_whose_key_is_not_text_is_named_by_its_component() -> None:
    raw = (
        '{"activityId":"a","payload":{"domains":[{"id":"containers","components":'
        '[{"id":"web","config":[{"key":["x"],"value":5}]}]}]}}'
    )
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state")
    assert str(caught.value) == (
        "invalid desired state: payload.domains[0].components[0].config[0].key "
        '(component "web"): Input should be a valid string; '
        "payload.domains[0].components[0].config[0].value "
        '(component "web"): Input should be a valid string'
    )
