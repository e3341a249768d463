"""Envelope edge cases that `make mutation` found untested (spec §1.4; docs/testing.md).

Equivalent mutants left alive in `cua.api.envelope`:
- `go_json` and `_component_context`: `ensure_ascii=None` (false, as False).
- `describe_validation_error`: `include_input`/`include_url` changed or dropped (only `loc`
  and `msg` are read).
- `decode`: `data.get("timestamp", None)` or no default (None reads as 0 just after);
  `readable_id = activity_id` whatever its type (a non-string id raises before it is used).

- `read_member`'s internals: the texts of the ValueErrors it catches itself, the check
  for an empty object (`{}` then fails as "expected a key": None all the same), `>= 1` for
  `> 1` before a nested object (an empty rest of the path fails: None all the same), and
  `_after_whitespace`'s None branch (its pattern always matches).
- `_skip_value` matching its scalar from the text's start, not `pos`: it loops for ever on
  most messages (mutmut reports a timeout, not a kill); the whitespace test fails at once.
- `_bounded_int` with `<` for `<=`: a number of exactly 400 digits is out of every range as
  an int or as a float.
"""

from __future__ import annotations

import pytest

from cua.api import envelope
from cua.api.envelope import (
    MessageError,
    decode,
    decode_object,
    describe_validation_error,
    encode,
    encode_feedback,
    now_ms,
    read_member,
)
from cua.api.models import Action, ActionStatusType, Component, DesiredState, DesiredStateFeedback
from cua.validation import Invalid

pytestmark = pytest.mark.unit


def test_now_ms_is_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope.time, "time_ns", lambda: 1_752_829_700_076_999_999)
    assert now_ms() == 1_752_829_700_076


@pytest.mark.parametrize("stamp", ["true", "false"])
def test_a_bool_is_not_a_timestamp(stamp: str) -> None:
    # Go cannot decode a JSON bool into an int64; Python's bool is an int, so it is checked.
    with pytest.raises(MessageError) as caught:
        decode('{"activityId":"a","timestamp":' + stamp + "}", DesiredState, "desired state")
    assert str(caught.value) == "invalid desired state: timestamp: must be an integer"
    assert caught.value.activity_id == "a"


def test_a_null_timestamp_is_zero() -> None:
    assert decode('{"activityId":"a","timestamp":null}', DesiredState, "x").timestamp == 0


def test_text_that_is_not_utf8_is_not_json() -> None:
    with pytest.raises(MessageError) as caught:
        decode(b'{"activityId":"\xff"}', DesiredState, "desired state")
    assert str(caught.value) == "invalid desired state: not valid JSON (not UTF-8)"
    assert caught.value.activity_id is None


def test_every_validation_error_is_named() -> None:
    raw = (
        '{"activityId":"a","payload":{"domains":[{"id":1,"components":'
        '[{"id":"x","config":[{"key":"env","value":5}]}]}]}}'
    )
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state")
    assert str(caught.value) == (
        "invalid desired state: payload.domains[0].id: Input should be a valid string; "
        'payload.domains[0].components[0].config[0].value (component "x", key "env"): '
        "Input should be a valid string"
    )


def test_feedback_of_actions_only_encodes_as_encode_does() -> None:
    # No status, baseline or message: the actions open the payload (no leading comma).
    action = Action(component=Component(id="containers:a", version="1"),
                    status=ActionStatusType.IDENTIFIED)  # fmt: skip
    feedback = DesiredStateFeedback(actions=[action])
    raw = encode_feedback("A", feedback, 7)
    assert raw == encode("A", feedback, 7)
    assert b'"payload":{"actions":[' in raw


@pytest.mark.parametrize("raw", ['{"x":1}', '{"payload":{}}', "{}", '{"activityId":5}'])
def test_read_member_finds_no_activity_id(raw: str) -> None:
    assert read_member(raw, ("activityId",)) is None
    assert read_member(raw, ("payload", "command")) is None


@pytest.mark.parametrize("first", ["1", '{"x":1}'])
def test_a_later_activity_id_wins_over_another_value(first: str) -> None:
    assert read_member('{"activityId":' + first + ',"activityId":"b"}', ("activityId",)) == "b"


def test_a_message_of_exactly_the_limit_is_read() -> None:
    raw = '{"activityId":"a","timestamp":1}'
    assert decode(raw, DesiredState, "x", max_size=len(raw)).timestamp == 1


def test_the_smallest_int64_is_a_timestamp() -> None:
    raw = '{"activityId":"a","timestamp":-9223372036854775808}'
    assert decode(raw, DesiredState, "x").timestamp == -(2**63)


@pytest.mark.parametrize(
    "raw", ['{"activityId":"abcdef","x":' + "1" * 50 + "}", '{"activityId":"abcdef","x":NaN}']
)
def test_an_unusable_message_with_a_long_activity_id_names_the_id_not_the_size(raw: str) -> None:
    # Too large or not JSON: the activityId is read to answer, but is over its limit.
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state", max_size=60, max_activity_id=5)
    assert str(caught.value) == (
        "invalid desired state: activityId: longer than 5 characters"
        " (update_agent.max_activity_id_length)"
    )
    assert caught.value.activity_id is None


class _TooDeep:
    """A payload type whose validation recurses too deeply (as pydantic may on deep input)."""

    @classmethod
    def model_validate(cls, data: object) -> None:
        raise RecursionError


def test_a_payload_nested_too_deeply_names_the_activity_id() -> None:
    data = {"activityId": "a", "payload": {"domains": []}}
    with pytest.raises(MessageError) as caught:
        decode_object(data, _TooDeep, "desired state")  # type: ignore[type-var]
    assert str(caught.value) == "invalid desired state: nested too deeply"
    assert caught.value.activity_id == "a"


def test_a_long_component_id_is_cut_where_an_error_names_it() -> None:
    long_id = "c" * 100
    raw = (
        '{"activityId":"a","payload":{"domains":[{"id":"containers","components":'
        f'[{{"id":"{long_id}","config":[{{"key":"memory","value":5}}]}}]}}]}}}}'
    )
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state")
    assert f'(component "{"c" * 64}…", key "memory")' in str(caught.value)
    assert long_id not in str(caught.value)


def test_an_unknown_key_is_not_named_but_the_component_is() -> None:
    raw = (
        '{"activityId":"a","payload":{"domains":[{"id":"containers","components":'
        '[{"id":"web","config":[{"key":"hunter2","value":5}]}]}]}}'
    )
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state")
    assert '(component "web"): Input should be a valid string' in str(caught.value)
    assert "hunter2" not in str(caught.value)


def _component_error(component: str, entry: str) -> str:
    raw = (
        '{"activityId":"a","payload":{"domains":[{"id":"containers","components":'
        f'[{{{component}"config":[{entry}]}}]}}]}}}}'
    )
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state")
    return str(caught.value).removeprefix("invalid desired state: payload.domains[0].components[0]")


def test_a_config_entry_that_is_not_an_object_names_nothing_more() -> None:
    assert _component_error('"id":"web",', '"image"') == (
        ".config[0]: Input should be a valid dictionary or instance of KeyValuePair"
    )


def test_a_component_without_an_id_and_an_unknown_key_name_nothing() -> None:
    assert _component_error("", '{"key":"custom","value":5}') == (
        ".config[0].value: Input should be a valid string"
    )


def test_a_component_id_that_is_not_text_is_not_named_but_the_key_is() -> None:
    assert _component_error('"id":5,', '{"key":"image","value":5}') == (
        ".id: Input should be a valid string; payload.domains[0].components[0]"
        '.config[0].value (key "image"): Input should be a valid string'
    )


def test_a_component_id_of_exactly_the_limit_is_named_whole() -> None:
    named = "c" * 64
    assert _component_error(f'"id":"{named}",', '{"key":"env","value":5}') == (
        f'.config[0].value (component "{named}", key "env"): Input should be a valid string'
    )


_DATA = {"domains": [{"components": [{"id": "web", "config": [{"key": "image"}]}]}]}


@pytest.mark.parametrize(
    ("location", "context"),
    [
        (("domains", 0, "components", 0, "config", 0), ' (component "web", key "image")'),
        (("domains", 0, "components", 0, "config", 0, "value"), ' (component "web", key "image")'),
        (("domains", 0, "components", 0, "other", 0, "value"), ""),
        (("other", 0, "components", 0, "config", 0, "value"), ""),
        (("domains", 0, "other", 0, "config", 0, "value"), ""),
        (("domains", 0, "components", 0, "config"), ""),
    ],
)
def test_only_a_place_in_a_config_entry_names_its_component(
    location: tuple[str | int, ...], context: str
) -> None:
    where = "payload" + "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in location)
    error = Invalid([(location, "bad")])
    assert describe_validation_error(error, data=_DATA) == f"{where}{context}: bad"


def test_whitespace_around_a_skipped_number_is_read_past() -> None:
    assert read_member('{"a": 1 , "activityId": "x"}', ("activityId",)) == "x"
