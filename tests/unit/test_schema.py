"""The generated JSON Schemas stay in sync with the models (`make schema`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cua.api.schema import main, schemas, write

pytestmark = pytest.mark.unit

COMMITTED = Path(__file__).parent.parent.parent / "docs" / "schema"


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


def test_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "out")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8
    json.loads((tmp_path / "out" / "inventory.json").read_text())
    assert main([]) == 2
