"""Unknown-key edge cases that `make mutation` found untested (docs/testing.md)."""

from __future__ import annotations

import pytest

from cua.api.extra_keys import desired_state_unknown_keys

pytestmark = pytest.mark.unit


def test_unknown_keys_are_named_at_every_level_with_their_path() -> None:
    envelope = {
        "activityId": "a",
        "paylod": {},
        "payload": {
            "domain": {"idd": "x"},  # not a known key: not walked either
            "baselines": [{"titel": "t", "components": ["containers:web"]}],
            "domains": [
                {"id": "containers", "confg": []},
                "not an object",
                {"components": [{"id": "web", "config": [{"key": "a", "valu": "b"}]}]},
            ],
        },
    }
    assert desired_state_unknown_keys(envelope) == [
        'envelope: unknown key "paylod" ignored (did you mean "payload"?)',
        'payload: unknown key "domain" ignored (did you mean "domains"?)',
        'payload.baselines[0]: unknown key "titel" ignored (did you mean "title"?)',
        'payload.domains[0]: unknown key "confg" ignored (did you mean "config"?)',
        'payload.domains[2].components[0].config[0]: unknown key "valu" ignored'
        ' (did you mean "value"?)',
    ]


@pytest.mark.parametrize("envelope", [None, [], {"payload": {"domains": {"confg": 1}}}])
def test_what_is_not_an_object_or_a_list_where_expected_is_not_walked(envelope: object) -> None:
    assert desired_state_unknown_keys(envelope) == []


def test_an_object_in_a_list_of_plain_values_is_not_walked() -> None:
    # A baseline's components are names (list[str]): an object there is a type error for
    # validation to name, never a model to look for unknown keys in.
    envelope = {"payload": {"baselines": [{"components": [{"confg": 1}]}]}}
    assert desired_state_unknown_keys(envelope) == []
