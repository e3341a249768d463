"""The current state (§5) as the agent reads it from the engine."""

from __future__ import annotations

import pytest

from cua.containers.labels import encode_labels
from cua.containers.parse import parse_component
from cua.current_state import CurrentStateReader
from cua.settings import Manage
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from tests.builders import add_managed, component, desired, operation, settings

pytestmark = pytest.mark.unit


async def test_current_state_reports_recorded_image_and_unmanaged_marker(
    engine: FakeEngine,
) -> None:
    """manage: labelled reports this domain's containers and the configured system
    containers (marked managed=false); no other one: their env may hold secrets."""
    add_managed(engine, "web", "2.0", image="img:1")
    secret = component("db", image="postgres:16", env="POSTGRES_PASSWORD=s3cr3t")
    engine.add_container("db", parse_component(secret).spec)  # not ours: not reported
    other = parse_component(component("other", image="img:1", env="TOKEN=s3cr3t"))
    engine.add_container("other", other.spec, encode_labels(other, "elsewhere"))
    engine.add_container("foreign", parse_component(component("foreign", image="img:9")).spec)
    reader = CurrentStateReader(engine, settings(system_containers=("foreign",)))
    inventory = (await reader.read()).to_wire()
    nodes = inventory["softwareNodes"]
    assert nodes[0]["id"] == "containers-update-agent"
    assert [n["id"] for n in nodes[1:]] == ["containers:foreign", "containers:web"]
    assert {"key": "managed", "value": "false"} in nodes[1]["parameters"]
    assert nodes[2]["version"] == "1"
    assert "s3cr3t" not in str(inventory)
    # manage: all reports every container, as Kanto.
    inventory = (await CurrentStateReader(engine, settings(manage=Manage.ALL)).read()).to_wire()
    ids = [n["id"] for n in inventory["softwareNodes"][1:]]
    assert ids == ["containers:db", "containers:foreign", "containers:other", "containers:web"]


async def test_current_state_shows_each_component_once_during_a_recreate(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    reader = CurrentStateReader(engine, settings())
    await op.command("DOWNLOAD", "")  # web.cua-new exists
    ids = [n["id"] for n in (await reader.read()).to_wire()["softwareNodes"]]
    assert ids == ["containers-update-agent", "containers:web"]
    await op.command("UPDATE", "")
    await op.command("ACTIVATE", "")  # web.cua-old exists
    inventory = (await reader.read()).to_wire()
    assert [n["id"] for n in inventory["softwareNodes"]] == [
        "containers-update-agent",
        "containers:web",
    ]
    assert {"key": "image", "value": "img:2"} in inventory["softwareNodes"][1]["parameters"]
    # A container of someone else's that only looks like ours is still reported (manage:
    # all; manage: labelled reports no container of someone else's).
    engine.add_container("x.cua-new", parse_component(component("x", image="img:1")).spec)
    inventory = (await CurrentStateReader(engine, settings(manage=Manage.ALL)).read()).to_wire()
    assert "containers:x.cua-new" in [n["id"] for n in inventory["softwareNodes"]]


async def test_current_state_engine_down_is_root_only(engine: FakeEngine) -> None:
    engine.available = False
    inventory = (await CurrentStateReader(engine, settings()).read()).to_wire()
    assert [n["id"] for n in inventory["softwareNodes"]] == ["containers-update-agent"]
    assert "associations" not in inventory
