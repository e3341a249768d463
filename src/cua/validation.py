"""Decode parsed JSON into msgspec Structs, and name every problem of an input they refuse.

msgspec decodes and checks in C and stops at the first problem, which it words in its own
way (``Expected `str`, got `int` - at `$.domains[0].id` ``). When it refuses an input,
`problems()` walks the input along the same types and names every problem in field order,
each with its place (a tuple of keys and indexes) and one of a few fixed texts ("Input should
be a valid string", "Input should be a valid list", "Input should be greater than or equal
to 1", ...): the texts that the agent's feedback, `cua validate` and the config errors have
always used. Values are never part of a text (they could be secrets).

Two dialects: `strict` (the config file, in JSON's words: "an object", "a valid array"; a
union names each of its types) and not strict (the wire models: a `null` member of an object
is dropped first, so the field keeps its zero value, as Go decodes it).
"""

from __future__ import annotations

import enum
import functools
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

__all__ = ["Invalid", "Location", "convert", "problems"]

T = TypeVar("T")
Location = tuple[str | int, ...]


class Invalid(ValueError):
    """An input that does not fit its type: every problem, `(location, text)`, in order."""

    def __init__(self, found: list[tuple[Location, str]]) -> None:
        super().__init__("; ".join(f"{loc}: {text}" for loc, text in found))
        self.problems = found


def convert(data: Any, type_: type[T], *, strict: bool) -> T:
    """`data` (parsed JSON) as `type_`; raises `Invalid` naming every problem."""
    if not strict:
        data = _without_nulls(data, type_)
    try:
        return msgspec.convert(data, type_, strict=True)
    except msgspec.ValidationError as error:
        found = problems(data, type_, strict=strict) or [_from_msgspec(error)]
        raise Invalid(found) from None


def problems(data: Any, type_: Any, *, strict: bool) -> list[tuple[Location, str]]:
    """Every problem of `data` as `type_` (none when it fits), in field order."""
    out: list[tuple[Location, str]] = []
    _check(data, type_, (), strict, out)
    return out


def _from_msgspec(error: msgspec.ValidationError) -> tuple[Location, str]:
    """A problem the walk does not see (a missing required field; the agent's models have
    none): the place msgspec names (`... - at `$.a[0].b``), and a text of ours (msgspec's may
    quote the value)."""
    _, _, path = str(error).rpartition(" - at `$")
    location = tuple(
        int(index) if index.isdigit() else (key or index)
        for key, index in re.findall(r"\.([^.\[`]+)|\[([^\]]*)\]", path)
    )
    return location, "Input is not valid"


# --- the walk -----------------------------------------------------------------------------------


def _check(
    value: Any, type_: Any, loc: Location, strict: bool, out: list[tuple[Location, str]]
) -> None:
    origin = typing.get_origin(type_)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(type_)
        before = len(out)
        _check(value, base, loc, strict, out)
        if len(out) == before:
            for meta in metadata:
                if isinstance(meta, msgspec.Meta):
                    _check_bounds(value, meta, loc, out)
        return
    if origin is types.UnionType or origin is typing.Union:
        _check_union(value, typing.get_args(type_), loc, strict, out)
    elif origin is list:
        if not isinstance(value, list):
            out.append(
                (loc, "Input should be a valid array" if strict else "Input should be a valid list")
            )
            return
        (item,) = typing.get_args(type_)
        for index, element in enumerate(value):
            _check(element, item, (*loc, index), strict, out)
    elif origin is dict:
        if not isinstance(value, dict):
            out.append((loc, _OBJECT if strict else "Input should be a valid dictionary"))
            return
        _, item = typing.get_args(type_)
        for key, element in value.items():
            _check(element, item, (*loc, key), strict, out)
    elif isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        _check_struct(value, type_, loc, strict, out)
    elif isinstance(type_, type) and issubclass(type_, enum.Enum):
        members = [member.value for member in type_]
        if value not in members or isinstance(value, bool):
            out.append((loc, f"Input should be {_one_of(members)}"))
    else:
        _check_scalar(value, type_, loc, out)


_OBJECT = "Input should be an object"


def _check_struct(
    value: Any, type_: type[msgspec.Struct], loc: Location, strict: bool, out: list[Any]
) -> None:
    if not isinstance(value, dict):
        instance = f"Input should be a valid dictionary or instance of {type_.__name__}"
        out.append((loc, _OBJECT if strict else instance))
        return
    for field in msgspec.structs.fields(type_):
        if field.encode_name in value:
            _check(value[field.encode_name], field.type, (*loc, field.encode_name), strict, out)


def _check_union(
    value: Any, members: tuple[Any, ...], loc: Location, strict: bool, out: list[Any]
) -> None:
    if value is None and type(None) in members:
        return
    kinds = [member for member in members if member is not type(None)]
    if len(kinds) == 1:  # an optional value: its problems are the type's own
        _check(value, kinds[0], loc, strict, out)
        return
    found: list[tuple[Location, str]] = []
    for member in kinds:
        of_member: list[tuple[Location, str]] = []
        # a member's type names it in the place of its problems (`stop_timeout.str`)
        _check(value, member, (*loc, member.__name__), strict, of_member)
        if not of_member:
            return
        found += of_member
    out += found


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    str: (lambda v: isinstance(v, str), "Input should be a valid string"),
    bool: (lambda v: isinstance(v, bool), "Input should be a valid boolean"),
    int: (_is_int, "Input should be a valid integer"),
    float: (lambda v: _is_int(v) or isinstance(v, float), "Input should be a valid number"),
}


def _check_scalar(value: Any, type_: Any, loc: Location, out: list[Any]) -> None:
    fits, text = _SCALARS[type_]
    if not fits(value):
        out.append((loc, text))


def _check_bounds(value: Any, meta: msgspec.Meta, loc: Location, out: list[Any]) -> None:
    if meta.ge is not None and value < meta.ge:
        out.append((loc, f"Input should be greater than or equal to {meta.ge}"))
    elif meta.le is not None and value > meta.le:
        out.append((loc, f"Input should be less than or equal to {meta.le}"))


def _one_of(values: list[Any]) -> str:
    quoted = [f"'{value}'" for value in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# --- null members are zero values ---------------------------------------------------------------


@functools.cache
def _nested(type_: type[msgspec.Struct]) -> tuple[tuple[str, type[msgspec.Struct], bool], ...]:
    """The fields of `type_` that hold Structs: (JSON name, Struct type, whether a list)."""
    found = []
    for field in msgspec.structs.fields(type_):
        inner = field.type
        if typing.get_origin(inner) in (types.UnionType, typing.Union):
            inner = next(arg for arg in typing.get_args(inner) if arg is not type(None))
        many = typing.get_origin(inner) is list
        if many:
            (inner,) = typing.get_args(inner)
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            found.append((field.encode_name, inner, many))
    return tuple(found)


def _without_nulls(data: Any, type_: Any) -> Any:
    """`data` with every `null` member of an object that is a Struct dropped: the field keeps
    its zero value (Go's rule). Only the objects that are Structs change; a `null` where a
    list item or a scalar is expected stays (and is refused)."""
    is_struct = isinstance(type_, type) and issubclass(type_, msgspec.Struct)
    if not (is_struct and isinstance(data, dict)):
        return data
    result = {key: value for key, value in data.items() if value is not None}
    for name, inner, many in _nested(type_):
        value = result.get(name)
        if many and isinstance(value, list):
            result[name] = [_without_nulls(item, inner) for item in value]
        elif not many and value is not None:
            result[name] = _without_nulls(value, inner)
    return result
