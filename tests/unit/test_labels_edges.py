"""Label decoding edge cases that `make mutation` found untested (docs/testing.md)."""

from __future__ import annotations

import json

import pytest

from cua.containers.labels import spec_from_json, spec_to_json
from cua.containers.spec import ContainerSpec, LogConfig, PortMapping, RestartPolicy

pytestmark = pytest.mark.unit

SPEC = ContainerSpec(
    name="web",
    image="web:1",
    ports=(PortMapping(80, 8080, 80),),
    restart=RestartPolicy(max_retries=3, timeout=5),
    log=LogConfig(max_files=2),
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
