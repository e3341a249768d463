"""Envelope edge cases that `make mutation` found untested (spec §1.4; docs/testing.md)."""

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
