"""Ownership per domain (our-behaviour "Containers that the agent owns"), on the fake engine:
an agent compares, reports and removes only its own domain's containers; a desired name
held by another domain's or an unmanaged container fails identification naming the owner;
ownership labels that come from the image do not count; manage: all is Kanto's."""

from __future__ import annotations

import pytest

from cua.api.models import DesiredState, Domain
from cua.containers.compare import ActionKind
from cua.containers.labels import LABEL_DOMAIN, LABEL_MANAGED, encode_labels
from cua.containers.parse import parse_component
from cua.current_state import CurrentStateReader
from cua.settings import Manage
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.manager import UpdateManager
from cua.update.plan import Plan, PlanError
from tests.builders import component, desired, settings

pytestmark = pytest.mark.unit


def add_owned(engine: FakeEngine, name: str, domain: str, image: str = "img:1") -> str:
    parsed = parse_component(component(name, image=image))
    return engine.add_container(name, parsed.spec, encode_labels(parsed, domain))


def for_domain(domain: str, *names: str) -> DesiredState:
    state = desired(*(component(name, image="img:1") for name in names))
    return DesiredState(domains=[Domain(id=domain, components=state.domains[0].components)])


async def plan_for(engine: FakeEngine, domain: str, *names: str, **overrides: object) -> Plan:
    manager = UpdateManager(engine, RecordingPublisher(), settings(domain=domain, **overrides))
    return await manager.plan(for_domain(domain, *names))


def kinds(plan: Plan) -> list[tuple[str, ActionKind]]:
    return [(a.name, a.kind) for a in plan.actions]


async def test_an_agent_destroys_only_its_own_domains_containers(engine: FakeEngine) -> None:
    add_owned(engine, "car-app", "cars")
    add_owned(engine, "truck-app", "trucks")
    add_owned(engine, "truck-db", "trucks")
    assert kinds(await plan_for(engine, "cars")) == [("car-app", ActionKind.DESTROY)]
    assert kinds(await plan_for(engine, "trucks", "truck-app")) == [
        ("truck-app", ActionKind.CHECK),
        ("truck-db", ActionKind.DESTROY),
    ]
    # manage: all keeps Kanto's meaning: every container not desired is destroyed.
    everything = await plan_for(engine, "cars", manage=Manage.ALL)
    assert {name for name, _ in kinds(everything)} == {"car-app", "truck-app", "truck-db"}


async def test_a_name_held_by_another_domain_fails_identification_naming_it(
    engine: FakeEngine,
) -> None:
    add_owned(engine, "web", "trucks")
    with pytest.raises(PlanError, match=r'web: .*belongs to the update agent of domain "trucks"'):
        await plan_for(engine, "cars", "web")
    engine.add_container("db", parse_component(component("db", image="img:1")).spec)
    with pytest.raises(PlanError, match=r"db: .*not managed by this agent nor by any other"):
        await plan_for(engine, "cars", "db")


async def test_a_name_held_by_another_domain_gets_identification_failed_and_no_change(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    truck = add_owned(engine, "web", "trucks")
    manager = UpdateManager(engine, pub, settings(domain="cars"))
    status = await manager.apply("A", for_domain("cars", "web"))
    assert status == "IDENTIFICATION_FAILED"
    assert '"trucks"' in pub.wire("A")[-1]["message"]
    assert engine.container_names() == ["web"]
    assert (await engine.inspect_container("web")).id == truck


async def test_ownership_labels_that_come_from_the_image_do_not_count(engine: FakeEngine) -> None:
    """Docker copies the image's LABELs onto the container: an image labelled like ours
    must not make its containers ours (they would be destroyed or taken over)."""
    engine.add_image("lookalike:1", labels={LABEL_MANAGED: "true", LABEL_DOMAIN: "cars"})
    parsed = parse_component(component("x", image="lookalike:1"))
    await engine.create_container("lookalike", parsed.spec, {})  # no labels of its own
    assert (await engine.inspect_container("lookalike")).labels[LABEL_DOMAIN] == "cars"
    assert kinds(await plan_for(engine, "cars")) == []  # not destroyed
    with pytest.raises(PlanError, match=r"lookalike: .*not managed by this agent nor by any"):
        await plan_for(engine, "cars", "lookalike")
    reader = CurrentStateReader(engine, settings(domain="cars"))
    nodes = (await reader.read()).to_wire()["softwareNodes"]
    assert [n["id"] for n in nodes] == ["cars-update-agent"]  # not reported either


async def test_the_agents_own_container_of_a_labelled_image_stays_its_own(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """An image made from one of our containers (docker commit) carries our labels; the
    containers the agent makes from it are still its own."""
    parsed = parse_component(component("web", image="img:1"))
    engine.add_image("committed:1", labels=encode_labels(parsed, "cars"))
    engine.add_registry_image("committed:1")
    manager = UpdateManager(engine, pub, settings(domain="cars"))
    state = DesiredState(
        domains=[Domain(id="cars", components=[component("web", image="committed:1")])]
    )
    assert await manager.apply("A", state) == "COMPLETED"
    assert kinds(await manager.plan(state)) == [("web", ActionKind.CHECK)]
