"""Extra hosts `container_<hostname>` resolved at start, on the fake engine."""

from __future__ import annotations

import pytest

from cua.api.models import ComponentWithConfig
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.hosts import container_entries, container_targets, resolve_hosts
from cua.update.manager import UpdateManager
from tests.builders import M_RUNNING, M_STARTED, act, component, desired, settings

pytestmark = pytest.mark.unit

DB = "databroker:container_databroker-host"


async def apply(
    engine: FakeEngine, pub: RecordingPublisher, activity: str, *comps: ComponentWithConfig
) -> str:
    manager = UpdateManager(engine, pub, settings())
    return str(await manager.apply(activity, desired(*comps)))


async def hosts_of(engine: FakeEngine, name: str) -> tuple[str, ...]:
    return (await engine.inspect_container(name)).spec.extra_hosts


async def address_of(engine: FakeEngine, name: str) -> str:
    return (await engine.inspect_container(name)).address


def activated(pub: RecordingPublisher, activity: str) -> list[dict[str, object]]:
    message = next(m for m in pub.wire(activity) if m["status"] == "ACTIVATION_SUCCESS")
    return list(message["actions"])


def test_resolution_is_pure() -> None:
    entries = ("a:container_x-host", "b:192.0.2.1", "c:host_ip", "d:container_gone-host")
    assert container_targets(entries) == ("x-host", "gone-host")
    resolved = resolve_hosts(entries, {"x-host": "10.0.0.5", "gone-host": ""})
    assert resolved.extra_hosts == ("a:10.0.0.5", "b:192.0.2.1", "c:host_ip")
    assert resolved.warnings == (
        "extra host d left out: no running container has hostname gone-host",
    )
    assert container_entries(entries, ("a:10.0.0.5", "b:192.0.2.1", "z:1.2.3.4")) == {"a:10.0.0.5"}


async def test_first_deployment_resolves_the_target_started_in_the_same_update(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """Leda's case: the apps name databroker, which this very update starts."""
    status = await apply(
        engine,
        pub,
        "first",
        component("databroker", image="img:1"),
        component("feedercan", image="img:1", host=DB),
        component("hvac", image="img:1", host=[DB, "gw:host_ip"]),
    )
    assert status == "COMPLETED"
    broker = await address_of(engine, "databroker")
    assert broker
    assert await hosts_of(engine, "feedercan") == (f"databroker:{broker}",)
    assert await hosts_of(engine, "hvac") == (f"databroker:{broker}", "gw:host_ip")
    assert [a["message"] for a in activated(pub, "first")] == [M_STARTED] * 3  # Kanto's bytes
    assert sorted(engine.container_names()) == ["databroker", "feedercan", "hvac"]


async def test_a_target_that_does_not_run_is_left_out_with_a_warning(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    assert await apply(engine, pub, "lonely", component("app", image="img:1", host=DB)) == (
        "COMPLETED"
    )
    assert await hosts_of(engine, "app") == ()
    warning = "extra host databroker left out: no running container has hostname databroker-host"
    assert activated(pub, "lonely") == [
        act("app", "ACTIVATION_SUCCESS", f"{M_STARTED} Warning: {warning}.")
    ]


async def test_a_recreated_target_is_followed_by_its_running_dependants(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """Beyond Kanto: the dependant (a CHECK) is replaced with the target's new address."""
    first = (component("databroker", image="img:1"), component("app", image="img:1", host=DB))
    assert await apply(engine, pub, "first", *first) == "COMPLETED"
    old_app = (await engine.inspect_container("app")).id
    old_broker = await address_of(engine, "databroker")

    second = (component("databroker", image="img:2"), component("app", image="img:1", host=DB))
    assert await apply(engine, pub, "second", *second) == "COMPLETED"
    new_broker = await address_of(engine, "databroker")
    assert new_broker != old_broker
    assert await hosts_of(engine, "app") == (f"databroker:{new_broker}",)
    assert (await engine.inspect_container("app")).id != old_app
    assert sorted(engine.container_names()) == ["app", "databroker"]  # the old app is gone
    assert activated(pub, "second")[1] == act("app", "ACTIVATION_SUCCESS", M_RUNNING)

    # Nothing changed: applied again, nothing is replaced.
    app_now = (await engine.inspect_container("app")).id
    assert await apply(engine, pub, "third", *second) == "COMPLETED"
    assert (await engine.inspect_container("app")).id == app_now


async def test_a_failed_update_puts_back_the_replaced_dependant(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    first = (component("databroker", image="img:1"), component("app", image="img:1", host=DB))
    assert await apply(engine, pub, "first", *first) == "COMPLETED"
    old_app = (await engine.inspect_container("app")).id
    old_hosts = await hosts_of(engine, "app")
    engine.behave_after_start("img:2", exit_code=1)  # the new databroker dies at once...
    second = (
        component("databroker", image="img:2"),
        component("app", image="img:1", host=DB),
        component("later", image="img:2"),  # ... and so does a container after the app
    )
    assert await apply(engine, pub, "second", *second) == "INCOMPLETE"
    assert sorted(engine.container_names()) == ["app", "databroker"]
    assert (await engine.inspect_container("app")).id == old_app
    assert await hosts_of(engine, "app") == old_hosts
