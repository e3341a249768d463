"""Wire models (spec §2.1, §4.1, §5.1, §6.1): Go's omitempty, key order, null handling."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cua.api.models import (
    Action,
    ActionStatusType,
    Association,
    Baseline,
    CommandType,
    Component,
    ComponentWithConfig,
    DesiredState,
    DesiredStateCommand,
    DesiredStateFeedback,
    Domain,
    HardwareNode,
    Inventory,
    KeyValuePair,
    SoftwareNode,
    SoftwareType,
    StatusType,
)

pytestmark = pytest.mark.unit


def test_status_values_are_the_code_values() -> None:
    assert [s.value for s in StatusType] == [
        "IDENTIFYING", "IDENTIFIED", "IDENTIFICATION_FAILED", "RUNNING", "COMPLETED",
        "INCOMPLETE", "INCOMPLETE_INCONSISTENT", "SUPERSEDED", "DOWNLOADING",
        "DOWNLOAD_SUCCESS", "DOWNLOAD_FAILURE", "ROLLBACK", "ROLLBACK_SUCCESS",
        "ROLLBACK_FAILURE", "UPDATING", "UPDATE_SUCCESS", "UPDATE_FAILURE", "ACTIVATING",
        "ACTIVATION_SUCCESS", "ACTIVATION_FAILURE", "CLEANUP", "CLEANUP_SUCCESS",
        "CLEANUP_FAILURE",
    ]  # fmt: skip
    assert {s.value for s in ActionStatusType} == {
        "IDENTIFIED", "DOWNLOADING", "DOWNLOAD_FAILURE", "DOWNLOAD_SUCCESS", "UPDATING",
        "UPDATE_FAILURE", "UPDATE_SUCCESS", "REMOVING", "REMOVAL_FAILURE", "REMOVAL_SUCCESS",
        "ACTIVATING", "ACTIVATION_FAILURE", "ACTIVATION_SUCCESS",
    }  # fmt: skip
    assert [c.value for c in CommandType] == [
        "DOWNLOAD", "UPDATE", "ACTIVATE", "ROLLBACK", "CLEANUP"
    ]  # fmt: skip
    # The obsolete statuses of old UM docs do not exist.
    assert "DOWNLOAD_COMPLETED" not in {s.value for s in StatusType}


def test_everything_empty_is_omitted() -> None:
    assert DesiredStateFeedback().to_wire() == {}
    assert Action().to_wire() == {}
    assert KeyValuePair().to_wire() == {}
    assert Inventory().to_wire() == {}
    assert SoftwareNode().to_wire() == {}
    assert HardwareNode().to_wire() == {}
    assert DesiredState().to_wire() == {}
    assert DesiredStateCommand().to_wire() == {}


def test_present_but_empty_component_is_an_empty_object() -> None:
    # Go: a non-nil *Component of empty strings marshals as {}.
    assert Action(component=Component()).to_wire() == {"component": {}}


def test_empty_value_in_a_pair_is_omitted() -> None:
    # Inventory verbose `finishedAt=""` goes out as {"key":"finishedAt"} (omitempty).
    assert KeyValuePair(key="finishedAt", value="").to_wire() == {"key": "finishedAt"}


def test_key_order_is_go_struct_order() -> None:
    feedback = DesiredStateFeedback(
        actions=[Action(message="m", progress=3, status=ActionStatusType.UPDATING,
                        component=Component(version="1", id="c"))],
        message="x",
        status=StatusType.UPDATING,
        baseline="b",
    )  # fmt: skip
    wire = feedback.to_wire()
    assert list(wire) == ["baseline", "status", "message", "actions"]
    assert list(wire["actions"][0]) == ["component", "status", "progress", "message"]
    assert list(wire["actions"][0]["component"]) == ["id", "version"]
    node = SoftwareNode(type=SoftwareType.CONTAINER, parameters=[KeyValuePair(key="k")],
                        name="n", version="v", id="i")  # fmt: skip
    assert list(node.to_wire()) == ["id", "version", "name", "parameters", "type"]
    inventory = Inventory(
        associations=[Association(target_id="t", source_id="s")],
        software_nodes=[node],
        hardware_nodes=[HardwareNode(id="h", addressable=True)],
    )
    wire_inventory = inventory.to_wire()
    assert list(wire_inventory) == ["hardwareNodes", "softwareNodes", "associations"]
    assert wire_inventory["associations"] == [{"sourceId": "s", "targetId": "t"}]
    assert wire_inventory["hardwareNodes"] == [{"id": "h", "addressable": True}]


def test_desired_state_parses_camel_case_and_nulls() -> None:
    state = DesiredState.model_validate(
        {
            "baselines": [{"title": "t", "components": ["containers:a"], "preconditions": None}],
            "domains": [
                {
                    "id": "containers",
                    "config": None,
                    "components": [{"id": "a", "version": None, "config": [{"key": "image"}]}],
                }
            ],
        }
    )
    assert state == DesiredState(
        baselines=[Baseline(title="t", components=["containers:a"])],
        domains=[
            Domain(
                id="containers",
                components=[ComponentWithConfig(id="a", config=[KeyValuePair(key="image")])],
            )
        ],
    )


def test_unknown_command_is_not_a_schema_error() -> None:
    assert DesiredStateCommand.model_validate({"command": "DO"}).command == "DO"


def test_progress_is_a_uint8() -> None:
    with pytest.raises(ValueError, match="progress"):
        Action(progress=256)


_text = st.text(max_size=8)
_pairs = st.lists(st.builds(KeyValuePair, key=_text, value=_text), max_size=3)
_actions = st.builds(
    Action,
    component=st.none() | st.builds(Component, id=_text, version=_text),
    status=st.none() | st.sampled_from(ActionStatusType),
    progress=st.integers(0, 255),
    message=_text,
)
_feedback = st.builds(
    DesiredStateFeedback,
    baseline=_text,
    status=st.none() | st.sampled_from(StatusType),
    message=_text,
    actions=st.lists(_actions, max_size=3),
)
_inventory = st.builds(
    Inventory,
    software_nodes=st.lists(
        st.builds(
            SoftwareNode,
            id=_text,
            version=_text,
            name=_text,
            parameters=_pairs,
            type=st.none() | st.sampled_from(SoftwareType),
        ),
        max_size=3,
    ),
    associations=st.lists(st.builds(Association, source_id=_text, target_id=_text), max_size=3),
)


def _has_empty(value: Any) -> bool:
    """An empty string, zero, false, null or empty list anywhere (Go would omit it)."""
    if isinstance(value, dict):
        return any(v in ("", 0, False, None, []) or _has_empty(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_empty(v) for v in value)
    return False


@given(_feedback)
def test_feedback_never_carries_an_empty_field(feedback: DesiredStateFeedback) -> None:
    wire = feedback.to_wire()
    assert not _has_empty(wire)
    assert DesiredStateFeedback.model_validate(wire) == feedback


@given(_inventory)
def test_inventory_never_carries_an_empty_field(inventory: Inventory) -> None:
    wire = inventory.to_wire()
    assert not _has_empty(wire)
    assert Inventory.model_validate(wire) == inventory
