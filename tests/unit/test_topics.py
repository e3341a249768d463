"""Topic prefix and topic names (spec §1.1, §1.2)."""

from __future__ import annotations

import pytest

from cua.api.topics import Topics, topic_prefix

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("domain", "prefix"),
    [
        ("containers", "containersupdate"),
        ("test", "testupdate"),
        ("testupdate", "testupdate"),
        ("test-withdash", "testwithdashupdate"),
        ("test-withdash-update", "testwithdashupdate"),
        ("self-update", "selfupdate"),
        ("device", "deviceupdate"),
        ("vehicle", "vehicleupdate"),
    ],
)
def test_topic_prefix_table(domain: str, prefix: str) -> None:
    assert topic_prefix(domain) == prefix


def test_topics_of_the_containers_domain() -> None:
    topics = Topics.for_domain("containers")
    assert topics.desired_state == "containersupdate/desiredstate"
    assert topics.desired_state_command == "containersupdate/desiredstate/command"
    assert topics.current_state_get == "containersupdate/currentstate/get"
    assert topics.desired_state_feedback == "containersupdate/desiredstatefeedback"
    assert topics.current_state == "containersupdate/currentstate"
    assert topics.subscriptions == (
        "containersupdate/desiredstate",
        "containersupdate/desiredstate/command",
        "containersupdate/currentstate/get",
    )


def test_dashes_are_removed_before_the_suffix_check() -> None:
    # "-update" at the end: dashes go first, so "update" is already there.
    assert Topics.for_domain("my-self-update").current_state == "myselfupdate/currentstate"
