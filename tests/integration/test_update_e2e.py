"""Update operations end to end on the private dockerd and registry (no fakes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cua.containers.parse import parse_component
from cua.containers.spec import RestartPolicyType
from cua.containers.state import ContainerStatus
from cua.engine.docker import DockerEngine
from cua.settings import Manage, UpdateSettings
from cua.testing.feedback import RecordingPublisher, collapse_progress
from cua.update.journal import Journal, journal_for
from cua.update.manager import UpdateManager
from cua.update.operation import Operation
from cua.update.recovery import recover
from cua_dev.images import ImageFactory
from tests.builders import NOTHING_TO_DO, component, desired, standalone_statuses

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images(image_factory: ImageFactory) -> dict[str, str]:
    return {
        "v1": image_factory("e2e/app", "v1", marker="v1"),
        "v2": image_factory("e2e/app", "v2", marker="v2"),
    }


def settings(**overrides: Any) -> UpdateSettings:
    return UpdateSettings(**{"stop_grace_period": 1.0, "progress_interval": 0.2, **overrides})


async def by_name(engine: DockerEngine) -> dict[str, ContainerStatus]:
    return {c.name: c.status for c in await engine.list_containers()}


async def test_cycle_with_all_five_action_kinds(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    setup = UpdateManager(engine, RecordingPublisher(), settings())
    first = desired(
        component("recr", image=images["v1"]),
        component("upd", image=images["v1"], restartPolicy="no"),
        component("chk", image=images["v1"]),
        component("gone", image=images["v1"]),
    )
    assert await setup.apply("setup", first) == "COMPLETED"
    await engine.stop_container("chk", 1.0)
    old_recr = (await engine.inspect_container("recr")).id

    pub = RecordingPublisher()
    second = desired(
        component("newc", image=images["v1"]),
        component("recr", image=images["v2"]),
        component("upd", image=images["v1"], restartPolicy="always"),
        component("chk", image=images["v1"]),
    )
    plan = await UpdateManager(engine, pub, settings()).plan(second)
    assert [(a.name, str(a.kind)) for a in plan.actions] == [
        ("newc", "CREATE"),
        ("recr", "RECREATE"),
        ("upd", "UPDATE"),
        ("chk", "CHECK"),
        ("gone", "DESTROY"),
    ]
    status = await UpdateManager(engine, pub, settings()).apply("cycle", second)
    assert status == "COMPLETED"
    assert [m["status"] for m in collapse_progress(pub.wire("cycle"))] == standalone_statuses(
        downloading=2, updating=3, activating=4
    )
    final = pub.wire("cycle")[-1]["actions"]
    assert [a["status"] for a in final] == [
        "ACTIVATION_SUCCESS", "ACTIVATION_SUCCESS", "ACTIVATION_SUCCESS", "ACTIVATION_SUCCESS",
        "REMOVAL_SUCCESS",
    ]  # fmt: skip
    assert await by_name(engine) == {
        "newc": ContainerStatus.RUNNING,
        "recr": ContainerStatus.RUNNING,
        "upd": ContainerStatus.RUNNING,
        "chk": ContainerStatus.RUNNING,
    }
    recr = await engine.inspect_container("recr")
    assert recr.id != old_recr
    assert recr.spec.image == images["v2"]
    assert (await engine.inspect_container("upd")).spec.restart.type is RestartPolicyType.ALWAYS
    # The same desired state again: all CHECK (no spurious UPDATE, D12).
    again = await UpdateManager(engine, pub, settings()).plan(second)
    assert [str(a.kind) for a in again.actions] == ["CHECK"] * 4


async def test_unmanaged_and_system_containers(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    for name in ("foreign", "sys-x"):
        spec = parse_component(component(name, image=images["v1"])).spec
        async for _ in engine.pull_image(images["v1"]):
            pass
        await engine.create_container(name, spec, {})
        await engine.start_container(name)
    pub = RecordingPublisher()
    labelled = UpdateManager(engine, pub, settings(system_containers=("sys-x",)))
    assert await labelled.apply("L", desired()) == "COMPLETED"
    assert pub.statuses("L") == NOTHING_TO_DO
    assert set(await by_name(engine)) == {"foreign", "sys-x"}

    everything = UpdateManager(
        engine, pub, settings(manage=Manage.ALL, system_containers=("sys-x",))
    )
    assert await everything.apply("A", desired()) == "COMPLETED"
    assert [a["component"]["id"] for a in pub.wire("A")[1]["actions"]] == ["containers:foreign"]
    assert await by_name(engine) == {"sys-x": ContainerStatus.RUNNING}


async def test_start_failure_in_standalone_restores_the_old_container(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    assert (
        await manager.apply("setup", desired(component("web", image=images["v1"]))) == "COMPLETED"
    )
    old_id = (await engine.inspect_container("web")).id
    pub = RecordingPublisher()
    failing = desired(component("web", image=images["v2"], cmd="/no/such/entrypoint"))
    status = await UpdateManager(engine, pub, settings()).apply("fail", failing)
    assert status == "INCOMPLETE"
    statuses = [m["status"] for m in collapse_progress(pub.wire("fail"))]
    assert statuses[-5:] == [
        "ACTIVATION_FAILURE", "ROLLBACK", "ROLLBACK_SUCCESS", "CLEANUP_SUCCESS", "INCOMPLETE",
    ]  # fmt: skip
    failure = next(m for m in pub.wire("fail") if m["status"] == "ACTIVATION_FAILURE")
    assert failure["actions"][0]["status"] == "ACTIVATION_FAILURE"
    assert failure["actions"][0]["message"]
    assert await by_name(engine) == {"web": ContainerStatus.RUNNING}
    assert (await engine.inspect_container("web")).id == old_id


async def test_pull_failure_stops_nothing(
    engine: DockerEngine, images: dict[str, str], registry: str
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    assert (
        await manager.apply("setup", desired(component("web", image=images["v1"]))) == "COMPLETED"
    )
    started = (await engine.inspect_container("web")).state.started_at
    pub = RecordingPublisher()
    missing = desired(component("web", image=f"{registry}/e2e/missing:1"))
    assert await UpdateManager(engine, pub, settings()).apply("pull", missing) == "INCOMPLETE"
    wire = collapse_progress(pub.wire("pull"))
    assert [m["status"] for m in wire] == standalone_statuses(fails="DOWNLOAD")
    assert wire[3]["actions"][0]["status"] == "DOWNLOAD_FAILURE"
    assert "missing" in wire[3]["actions"][0]["message"]
    details = await engine.inspect_container("web")
    assert details.state.status is ContainerStatus.RUNNING
    assert details.state.started_at == started  # never stopped
    assert set(await by_name(engine)) == {"web"}


async def test_malformed_entries_warn_or_in_strict_mode_fail_touching_nothing(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    assert (
        await manager.apply("setup", desired(component("web", image=images["v1"]))) == "COMPLETED"
    )
    before = {c.id: c.status for c in await engine.list_containers()}
    leda_port = "localhost:55555:30555-30555/tcp"
    changed = desired(
        component("web", image=images["v2"], port=leda_port), component("more", image=images["v1"])
    )

    strict = RecordingPublisher()
    status = await UpdateManager(engine, strict, settings(strict=True)).apply("strict", changed)
    assert status == "IDENTIFICATION_FAILED"
    assert strict.wire("strict") == [
        {
            "status": "IDENTIFICATION_FAILED",
            "message": "cannot convert desired state components to container configurations: "
            f'invalid configuration for container web: invalid port "{leda_port}": '
            'the host IP "localhost" is not an IP address',
        }
    ]
    assert {c.id: c.status for c in await engine.list_containers()} == before

    lenient = RecordingPublisher()
    assert await UpdateManager(engine, lenient, settings()).apply("lenient", changed) == (
        "COMPLETED"
    )
    identified = lenient.wire("lenient")[1]
    assert identified["status"] == "IDENTIFIED"
    assert identified["message"] == (
        f'container web: port "{leda_port}" ignored: the host IP "localhost" is not an IP address'
    )
    assert (await engine.inspect_container("web")).spec.ports == ()


async def test_d12_dropping_a_memory_limit_recreates_once_then_checks(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    limited = desired(component("web", image=images["v1"], memory="64M", memoryReservation="32M"))
    assert await manager.apply("limited", limited) == "COMPLETED"
    unlimited = desired(component("web", image=images["v1"]))
    plan = await manager.plan(unlimited)
    assert [(a.kind, a.differences) for a in plan.actions] == [
        ("RECREATE", ("memory", "memoryReservation"))
    ]
    assert await manager.apply("unlimited", unlimited) == "COMPLETED"
    assert (await engine.inspect_container("web")).spec.resources is None
    assert [a.kind for a in (await manager.plan(unlimited)).actions] == ["CHECK"]


async def test_crash_recovery_after_activation(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    assert (
        await manager.apply("setup", desired(component("web", image=images["v1"]))) == "COMPLETED"
    )
    old_id = (await engine.inspect_container("web")).id
    pub = RecordingPublisher()
    plan = await manager.plan(desired(component("web", image=images["v2"])))
    operation = Operation("crash", plan, engine, pub, settings(), journal=Journal(None))
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE"):
        await operation.command(command, "")
    assert set(await by_name(engine)) == {"web", "web.cua-old"}
    # The agent dies here (no CLEANUP); at the next start recovery puts the old one back.
    done = await recover(engine)
    assert done
    assert await by_name(engine) == {"web": ContainerStatus.RUNNING}
    assert (await engine.inspect_container("web")).id == old_id


async def test_crash_recovery_from_the_journal(
    engine: DockerEngine, images: dict[str, str], tmp_path: Path
) -> None:
    """What names do not show (a DESTROY's stop, an UPDATE's runtime change) is undone
    from the operation's journal at the next start."""
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    first = desired(
        component("upd", image=images["v1"], restartPolicy="no", memory="100M"),
        component("gone", image=images["v1"]),
    )
    assert await manager.apply("setup", first) == "COMPLETED"
    journal = journal_for(tmp_path, "containers")
    plan = await manager.plan(
        desired(component("upd", image=images["v1"], restartPolicy="always", memory="200M"))
    )
    assert [str(a.kind) for a in plan.actions] == ["UPDATE", "DESTROY"]
    operation = Operation("crash", plan, engine, RecordingPublisher(), settings(), journal=journal)
    for command in ("DOWNLOAD", "UPDATE"):
        await operation.command(command, "")
    assert await by_name(engine) == {"upd": ContainerStatus.RUNNING, "gone": ContainerStatus.EXITED}
    assert (await engine.inspect_container("upd")).spec.restart.type is RestartPolicyType.ALWAYS
    # The agent dies here (no CLEANUP); the next start recovers from the journal.
    assert journal.path is not None
    assert journal.path.exists()
    done = await recover(engine, journal)
    assert sorted(done) == [
        "gone: container stopped by the operation started again",
        "upd: previous restart policy and memory limits restored",
    ]
    running = ContainerStatus.RUNNING
    assert await by_name(engine) == {"upd": running, "gone": running}
    spec = (await engine.inspect_container("upd")).spec
    assert spec.restart.type is RestartPolicyType.NO
    assert spec.resources is not None
    assert spec.resources.memory == "100M"
    assert not journal.path.exists()
