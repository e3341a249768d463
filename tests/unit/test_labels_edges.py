"""Label decoding edge cases that `make mutation` found untested (docs/testing.md).

Equivalent mutants left alive in `cua.containers.labels`:
- The texts of the TypeErrors raised inside `spec_from_json` (`expected a string`, ...):
  only the exception's type is shown (`not a container spec: TypeError`).
- No length check on a device, port or mount entry: unpacking it raises ValueError all
  the same.
- `spec_to_json` with `ensure_ascii=None`: false, as False.
"""

from __future__ import annotations

import json
import logging

import pytest

from cua.containers.labels import (
    LABEL_SCHEMA,
    LABEL_SPEC,
    decode_labels,
    encode_labels,
    spec_from_json,
    spec_to_json,
)
from cua.containers.parse import parse_component
from cua.containers.spec import ContainerSpec, PortMapping, ProcessConfig, RestartPolicy
from tests.builders import component, log_config

pytestmark = pytest.mark.unit

SPEC = ContainerSpec(
    name="web",
    image="web:1",
    ports=(PortMapping(80, 8080, 80),),
    restart=RestartPolicy(max_retries=3, timeout=5),
    log=log_config(max_files=2),
)


@pytest.mark.parametrize(
    ("field", "index"),
    [("restart", 1), ("restart", 2), ("log", 1)],
)
def test_a_bool_is_not_an_integer(field: str, index: int) -> None:
    # JSON `true` is a Python int subclass: it must not pass for a count or a timeout.
    data = json.loads(spec_to_json(SPEC))
    data[field][index] = True
    with pytest.raises(ValueError, match="not a container spec: TypeError"):
        spec_from_json(json.dumps(data))


@pytest.mark.parametrize("index", [1, 2, 3])
def test_a_bool_is_not_a_port_number(index: int) -> None:
    data = json.loads(spec_to_json(SPEC))
    data["ports"][0][index] = False
    with pytest.raises(ValueError, match="not a container spec: TypeError"):
        spec_from_json(json.dumps(data))


@pytest.mark.parametrize("field", ["restart", "log"])
def test_a_longer_record_is_not_a_spec(field: str) -> None:
    data = json.loads(spec_to_json(SPEC))
    data[field].append(1)
    with pytest.raises(ValueError, match="not a container spec: TypeError"):
        spec_from_json(json.dumps(data))


def test_a_string_is_not_a_list_of_hosts() -> None:
    data = json.loads(spec_to_json(SPEC))
    data["extraHosts"] = "db:10.0.0.1"
    with pytest.raises(ValueError, match="not a container spec: TypeError"):
        spec_from_json(json.dumps(data))


def test_the_spec_label_keeps_text_as_written() -> None:
    spec = ContainerSpec(name="web", image="web:1", config=ProcessConfig(env=("GREETING=grüß",)))
    assert "GREETING=grüß" in spec_to_json(spec)


@pytest.mark.parametrize(
    ("damage", "logged"),
    [
        ({LABEL_SCHEMA: "2"}, "unknown schema version '2'"),
        ({LABEL_SPEC: "{"}, "corrupt (JSONDecodeError)"),
    ],
)
def test_unusable_labels_are_logged(
    damage: dict[str, str], logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {
        **encode_labels(parse_component(component("web", image="web:1")), "containers"),
        **damage,
    }
    with caplog.at_level(logging.WARNING, logger="cua.containers.labels"):
        assert decode_labels(labels) is None
    assert caplog.messages == [f"container labels: {logged}; treated as unlabelled"]


@pytest.mark.parametrize("sizes", [["100M", "50M"], ["100M", "50M", "", ""]])
def test_resources_are_exactly_three_sizes(sizes: list[str]) -> None:
    data = json.loads(spec_to_json(SPEC))
    data["resources"] = sizes
    with pytest.raises(ValueError, match="not a container spec: TypeError"):
        spec_from_json(json.dumps(data))
