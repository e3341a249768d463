"""The generated JSON Schemas stay in sync with the models (`make schema`) and describe the
wire: real messages fit them, broken ones do not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cua.api.models import (
    Action,
    ActionStatusType,
    Component,
    DesiredStateFeedback,
    HardwareNode,
    Inventory,
    KeyValuePair,
    SoftwareNode,
    SoftwareType,
    StatusType,
    WireModel,
)
from cua.api.schema import MESSAGES, main, schemas, write

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parent.parent.parent
COMMITTED = ROOT / "docs" / "schema"


def test_every_message_and_envelope_has_a_schema() -> None:
    stems = ("desired-state", "desired-state-command", "desired-state-feedback", "inventory")
    assert sorted(schemas()) == sorted(
        f"{stem}{suffix}.json" for stem in stems for suffix in ("", "-envelope")
    )


def test_committed_schemas_are_up_to_date(tmp_path: Path) -> None:
    for path in write(tmp_path):
        committed = COMMITTED / path.name
        assert committed.exists(), f"run `make schema`: {committed} is missing"
        assert committed.read_text() == path.read_text(), f"run `make schema`: {path.name}"


def test_schema_content() -> None:
    generated = schemas()
    desired = generated["desired-state.json"]
    assert set(desired["properties"]) == {"baselines", "domains"}
    pair = desired["$defs"]["KeyValuePair"]
    assert set(pair["properties"]) == {"key", "value"}
    outgoing = generated["desired-state-feedback-envelope.json"]
    assert outgoing["required"] == ["activityId", "timestamp", "payload"]
    incoming = generated["desired-state-envelope.json"]
    assert "required" not in incoming
    inventory = generated["inventory.json"]
    assert set(inventory["properties"]) == {"hardwareNodes", "softwareNodes", "associations"}
    assert inventory["$defs"]["Association"]["properties"].keys() == {"sourceId", "targetId"}
    statuses = generated["desired-state-feedback.json"]["$defs"]["StatusType"]
    assert statuses == {
        "title": "StatusType",
        "type": "string",
        "enum": [status.value for status in StatusType],  # the code's order
    }


def test_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "out")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8
    json.loads((tmp_path / "out" / "inventory.json").read_text())
    assert main([]) == 2


# --- the schemas describe the wire ---------------------------------------------------------------

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "null": type(None),
    "boolean": bool,
}


def _fits(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """`value` against the JSON Schema keywords our schemas use ($ref, anyOf, type, enum,
    properties, required, items, minimum, maximum): a small validator, for this test."""
    if "$ref" in schema:
        return _fits(value, root["$defs"][schema["$ref"].rpartition("/")[2]], root)
    if "anyOf" in schema:
        return any(_fits(value, option, root) for option in schema["anyOf"])
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return False
    elif kind is not None and (
        not isinstance(value, _TYPES[kind]) or (kind != "boolean" and isinstance(value, bool))
    ):
        return False
    if kind == "integer" and not schema.get("minimum", value) <= value <= schema.get(
        "maximum", value
    ):
        return False
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return all(key in value for key in schema.get("required", [])) and all(
            _fits(item, properties[key], root) for key, item in value.items() if key in properties
        )
    if isinstance(value, list):
        return all(_fits(item, schema.get("items", {}), root) for item in value)
    return True


@pytest.mark.parametrize("example", ["leda-desired-state.json", "quickstart-desired-state.json"])
def test_the_example_desired_states_fit_the_schemas(example: str) -> None:
    message = json.loads((ROOT / "examples" / example).read_text())
    envelope = schemas()["desired-state-envelope.json"]
    payload = schemas()["desired-state.json"]
    assert _fits(message, envelope, envelope)
    assert _fits(message["payload"], payload, payload)
    assert message["payload"]["domains"][0]["components"]  # not vacuous
    broken = json.loads(json.dumps(message))
    broken["payload"]["domains"][0]["components"][0]["config"][0]["value"] = 5
    assert not _fits(broken, envelope, envelope)
    assert not _fits({**message, "timestamp": "now"}, envelope, envelope)


def test_outgoing_messages_fit_the_schemas() -> None:
    action = Action(component=Component(id="containers:a", version="1"),
                    status=ActionStatusType.UPDATING, progress=255, message="m")  # fmt: skip
    feedback = DesiredStateFeedback(baseline="b", status=StatusType.RUNNING, actions=[action])
    node = SoftwareNode(id="containers:a", type=SoftwareType.CONTAINER,
                        parameters=[KeyValuePair(key="status", value="Running")])  # fmt: skip
    inventory = Inventory(hardware_nodes=[HardwareNode(id="h", addressable=True)],
                          software_nodes=[node])  # fmt: skip
    generated = schemas()
    for stem, wire in (("desired-state-feedback", feedback.to_wire()),
                       ("inventory", inventory.to_wire())):  # fmt: skip
        envelope = generated[f"{stem}-envelope.json"]
        message = {"activityId": "a", "timestamp": 1, "payload": wire}
        assert _fits(message, envelope, envelope)
        assert not _fits({"activityId": "a", "payload": wire}, envelope, envelope)  # required
    feedback_schema = generated["desired-state-feedback.json"]
    too_far = {"actions": [{**action.to_wire(), "progress": 256}]}
    assert not _fits(too_far, feedback_schema, feedback_schema)
    assert not _fits({"status": "DONE"}, feedback_schema, feedback_schema)


def _models(model: type[WireModel]) -> dict[str, type[WireModel]]:
    """`model` and every model it holds, by name."""
    found = {model.__name__: model}
    for field in msgspec.structs.fields(model):
        for inner in (field.type, *getattr(field.type, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, WireModel):
                found.update(_models(inner))
    return found


@pytest.mark.parametrize("stem", sorted(MESSAGES))
def test_every_model_field_is_in_the_schema_by_its_wire_name(stem: str) -> None:
    model = MESSAGES[stem][0]
    schema = schemas()[f"{stem}.json"]
    definitions = {**schema.get("$defs", {}), model.__name__: schema}
    for name, inner in _models(model).items():
        wire_names = [field.encode_name for field in msgspec.structs.fields(inner)]
        assert list(definitions[name]["properties"]) == wire_names
        assert "required" not in definitions[name]  # every field may be missing
