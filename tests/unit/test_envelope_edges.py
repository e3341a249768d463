"""Envelope edge cases that `make mutation` found untested (spec §1.4; docs/testing.md).

Equivalent mutants left alive in `cua.api.envelope`:
- `go_json`: `ensure_ascii=None` (false, as False).
- `describe_validation_error`: `include_input`/`include_url` changed or dropped (only `loc`
  and `msg` are read).
- `decode`: `data.get("timestamp", None)` or no default (None reads as 0 just after);
  `readable_id = activity_id` whatever its type (a non-string id raises before it is used).

And in `cua.api.models`: `to_wire` without `mode="json"` (or with a mode pydantic does not
know): every wire value is a str, an int or a StrEnum, which json.dumps writes the same.
"""

from __future__ import annotations

import pytest

from cua.api import envelope
from cua.api.envelope import MessageError, decode, now_ms
from cua.api.models import DesiredState

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
        "payload.domains[0].components[0].config[0].value: Input should be a valid string"
    )
