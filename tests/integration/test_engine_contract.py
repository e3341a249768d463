"""The `Engine` contract, run against the fake and the real dockerd (one suite, two engines).

The `fake` variants are marked `unit` (no services); the `docker` variants `integration`
(the local stack). Whatever the update operations may rely on is asserted here, so the fake
cannot drift from the real engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from cua.containers.spec import (
    ContainerSpec,
    ProcessConfig,
    RestartPolicy,
    RestartPolicyType,
    size_text,
)
from cua.containers.state import ContainerStatus
from cua.engine.base import (
    ContainerEvent,
    ContainerNotFoundError,
    ContainerStateError,
    Engine,
    EventAction,
    ImageNotFoundError,
    NameConflictError,
    PullFailedError,
    StartFailedError,
    ensure_image,
)
from cua.engine.docker import DockerEngine
from cua.testing.fake_engine import FakeEngine
from cua_dev.unixhttp import RawEngine
from tests.builders import memory_limits

MISSING_ENTRYPOINT = "/no/such/entrypoint"
# Docker's reason when the command is not in the image (any Linux host).
MISSING_REASON = (
    f'exec: "{MISSING_ENTRYPOINT}": stat {MISSING_ENTRYPOINT}: no such file or directory'
)
# Differs from the test images' own CMD, so that inspect can tell it is the container's.
COMMAND = ("sh", "-c", "trap 'exit 0' TERM INT; sleep 1000000 & wait")


@dataclass
class Kit:
    """An engine plus the images a contract test needs, whichever engine it is."""

    kind: str
    engine: Engine
    image: str  # present locally
    pullable: str  # in the registry only
    missing: str  # nowhere
    forget: Callable[[str], Awaitable[None]]  # make an image absent locally again
    start_fails: Callable[[str], None] = lambda _name: None  # fake: arm the failure
    # fake: a container of this name writes these lines and exits with this code at start
    script_exit: Callable[[str, tuple[str, ...], int], None] = lambda _n, _lines, _code: None
    names: list[str] = field(default_factory=list)

    def name(self, prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(3)}"

    def spec(self, name: str, **changes: object) -> ContainerSpec:
        base = ContainerSpec(
            name=name,
            image=self.image,
            host_name=f"{name}-host",
            domain_name=f"{name}-domain",
            config=ProcessConfig(env=("GREETING=hello",), cmd=COMMAND),
        )
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def _fake_kit() -> Kit:
    fake = FakeEngine()
    fake.add_image("contract/app:1")
    fake.add_registry_image("contract/pullable:1", size=3_000_000)

    async def forget(ref: str) -> None:
        fake.remove_image(ref)

    return Kit(
        kind="fake",
        engine=fake,
        image="contract/app:1",
        pullable="contract/pullable:1",
        missing="contract/missing:1",
        forget=forget,
        start_fails=lambda name: fake.fail_start(name, MISSING_REASON),
        script_exit=lambda name, lines, code: fake.behave_after_start(
            name, exit_code=code, logs=lines
        ),
    )


async def _docker_kit(request: pytest.FixtureRequest) -> Kit:
    request.getfixturevalue("clean_engine")
    docker_host: str = request.getfixturevalue("docker_host")
    factory = request.getfixturevalue("image_factory")
    image = factory("contract/app", "1", load=True, marker="app")
    # 4 MB: about 2 MB of its own beyond the busybox layer the loaded image shares. A layer
    # of a few hundred bytes downloads before dockerd's progress broadcast reaches the pull's
    # stream, which then never says how big it was (seen under load: total 0).
    pullable = factory("contract/pullable", "1", marker="pullable", size_mb=4.0)
    registry: str = request.getfixturevalue("registry")

    async def forget(ref: str) -> None:
        RawEngine(docker_host).forget(ref)

    return Kit(
        kind="docker",
        engine=DockerEngine(docker_host, timeout=20),
        image=image,
        pullable=pullable,
        missing=f"{registry}/contract/missing:1",
        forget=forget,
    )


@pytest.fixture(
    params=[
        pytest.param("fake", marks=pytest.mark.unit),
        pytest.param("docker", marks=pytest.mark.integration),
    ]
)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    made = await (_fake_kit() if request.param == "fake" else _docker_kit(request))
    try:
        yield made
    finally:
        await made.engine.close()


async def _collect_until(
    events: AsyncIterator[ContainerEvent], container_id: str, last: EventAction
) -> list[EventAction]:
    """The actions seen for one container, up to and including `last` (bounded wait)."""
    seen: list[EventAction] = []
    async with asyncio.timeout(20):
        async for event in events:
            if event.container_id == container_id:
                seen.append(event.action)
                if event.action is last:
                    break
    return seen


# --- create / inspect / list ----------------------------------------------------------------


async def test_create_then_inspect_and_list(kit: Kit) -> None:
    name = kit.name("created")
    spec = kit.spec(name)
    container_id = await kit.engine.create_container(name, spec, {"cua.test": "yes"})

    details = await kit.engine.inspect_container(name)
    assert details.id == container_id
    assert details.name == name
    assert details.image == kit.image
    assert details.labels["cua.test"] == "yes"
    assert details.state.status is ContainerStatus.CREATED
    assert details.state.started_at == ""
    assert details.state.finished_at == ""
    assert details.created.endswith("Z")
    assert details.spec.image == kit.image
    assert details.spec.env == ("GREETING=hello",)
    assert details.spec.cmd == COMMAND
    assert details.spec.host_name == f"{name}-host"
    assert details.spec.domain_name == f"{name}-domain"
    assert (await kit.engine.inspect_container(container_id)).name == name

    listed = {c.name: c for c in await kit.engine.list_containers()}
    assert listed[name].id == container_id
    assert listed[name].labels["cua.test"] == "yes"
    assert listed[name].status is ContainerStatus.CREATED
    assert listed[name].image == kit.image


async def test_create_with_a_taken_name_is_a_name_conflict(kit: Kit) -> None:
    name = kit.name("taken")
    await kit.engine.create_container(name, kit.spec(name), {})
    with pytest.raises(NameConflictError, match=name):
        await kit.engine.create_container(name, kit.spec(name), {})


async def test_a_name_that_is_another_containers_id_prefix_is_free(kit: Kit) -> None:
    first = kit.name("first")
    first_id = await kit.engine.create_container(first, kit.spec(first), {})
    # Two id characters are a valid container name; names and ids are separate namespaces.
    prefix_name = first_id[:2]
    await kit.engine.create_container(prefix_name, kit.spec(prefix_name), {})
    assert (await kit.engine.inspect_container(prefix_name)).name == prefix_name
    assert (await kit.engine.inspect_container(first)).id == first_id
    await kit.engine.remove_container(prefix_name)


async def test_create_without_the_image_fails_and_creates_nothing(kit: Kit) -> None:
    name = kit.name("noimage")
    with pytest.raises(ImageNotFoundError, match="not present"):
        await kit.engine.create_container(name, kit.spec(name, image=kit.missing), {})
    assert name not in {c.name for c in await kit.engine.list_containers()}


# --- lifecycle --------------------------------------------------------------------------------


async def test_lifecycle_and_state_mapping(kit: Kit) -> None:
    engine = kit.engine
    name = kit.name("life")
    await engine.create_container(name, kit.spec(name), {})

    await engine.start_container(name)
    running = (await engine.inspect_container(name)).state
    assert running.status is ContainerStatus.RUNNING
    assert running.running
    assert running.started_at.endswith("Z")
    await engine.start_container(name)  # starting a running container is a no-op

    await engine.pause_container(name)
    assert (await engine.inspect_container(name)).state.status is ContainerStatus.PAUSED
    with pytest.raises(StartFailedError, match="paused"):
        await engine.start_container(name)
    with pytest.raises(ContainerStateError):
        await engine.pause_container(name)
    await engine.unpause_container(name)
    assert (await engine.inspect_container(name)).state.status is ContainerStatus.RUNNING
    with pytest.raises(ContainerStateError):
        await engine.unpause_container(name)

    await engine.stop_container(name, grace_period=5)
    stopped = (await engine.inspect_container(name)).state
    assert stopped.status is ContainerStatus.EXITED
    assert stopped.finished_at.endswith("Z")
    await engine.stop_container(name, grace_period=5)  # stop of a stopped one: no error
    with pytest.raises(ContainerStateError):
        await engine.pause_container(name)

    await engine.start_container(name)
    assert (await engine.inspect_container(name)).state.status is ContainerStatus.RUNNING

    await engine.remove_container(name)  # force: running is fine
    with pytest.raises(ContainerNotFoundError):
        await engine.inspect_container(name)
    await engine.remove_container(name)  # already gone: no error


async def test_stop_of_a_created_container_is_a_no_op(kit: Kit) -> None:
    name = kit.name("never")
    await kit.engine.create_container(name, kit.spec(name), {})
    await kit.engine.stop_container(name, grace_period=1)
    assert (await kit.engine.inspect_container(name)).state.status is ContainerStatus.CREATED


async def test_missing_container_is_not_found_everywhere(kit: Kit) -> None:
    engine = kit.engine
    missing = kit.name("ghost")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: engine.inspect_container(missing),
        lambda: engine.start_container(missing),
        lambda: engine.stop_container(missing, 1),
        lambda: engine.rename_container(missing, kit.name("other")),
        lambda: engine.update_container(missing, RestartPolicy(), None),
        lambda: engine.pause_container(missing),
        lambda: engine.unpause_container(missing),
    ]
    for call in calls:
        with pytest.raises(ContainerNotFoundError, match=missing):
            await call()
    await engine.remove_container(missing)


async def test_rename(kit: Kit) -> None:
    engine = kit.engine
    old, new, other = kit.name("old"), kit.name("new"), kit.name("other")
    container_id = await engine.create_container(old, kit.spec(old), {})
    await engine.create_container(other, kit.spec(other), {})

    await engine.rename_container(old, new)
    assert (await engine.inspect_container(new)).id == container_id
    with pytest.raises(ContainerNotFoundError):
        await engine.inspect_container(old)
    with pytest.raises(NameConflictError, match=other):
        await engine.rename_container(new, other)
    await engine.rename_container(new, new)  # to its own name: no-op
    assert (await engine.inspect_container(container_id)).name == new


async def test_runtime_update_of_restart_policy_and_memory(kit: Kit) -> None:
    engine = kit.engine
    name = kit.name("upd")
    await engine.create_container(name, kit.spec(name, resources=memory_limits(memory="50M")), {})
    await engine.start_container(name)

    restart = RestartPolicy(type=RestartPolicyType.ON_FAILURE, max_retries=4)
    await engine.update_container(name, restart, memory_limits(memory="200M", memory_swap="400M"))
    spec = (await engine.inspect_container(name)).spec
    assert spec.restart.type is RestartPolicyType.ON_FAILURE
    assert spec.restart.max_retries == 4
    assert spec.resources is not None
    assert size_text(spec.resources.memory) == "200M"
    assert size_text(spec.resources.memory_swap) == "400M"

    await engine.update_container(name, RestartPolicy(type=RestartPolicyType.ALWAYS), None)
    spec = (await engine.inspect_container(name)).spec
    assert spec.restart.type is RestartPolicyType.ALWAYS
    assert spec.resources is not None
    assert size_text(spec.resources.memory) == "200M"  # None leaves the limits alone


async def test_runtime_update_leaves_a_limit_it_does_not_give(kit: Kit) -> None:
    # Docker cannot remove a limit at runtime: an empty value means "unchanged" (the
    # rollback of an UPDATE relies on what the engine really keeps).
    engine = kit.engine
    name = kit.name("keep")
    limits = memory_limits(memory="50M", memory_reservation="20M", memory_swap="300M")
    await engine.create_container(name, kit.spec(name, resources=limits), {})

    await engine.update_container(name, RestartPolicy(), memory_limits(memory_reservation="30M"))
    resources = (await engine.inspect_container(name)).spec.resources
    assert resources == memory_limits(memory="50M", memory_reservation="30M", memory_swap="300M")

    await engine.update_container(name, RestartPolicy(), memory_limits(memory="60M"))
    resources = (await engine.inspect_container(name)).spec.resources
    assert resources is not None
    assert (size_text(resources.memory), size_text(resources.memory_reservation)) == (
        "60M",
        "30M",
    )
    assert size_text(resources.memory_swap) in ("", "120M")  # the engine's default: 2 x memory


async def test_missing_entrypoint_fails_to_start_with_the_engines_reason(kit: Kit) -> None:
    name = kit.name("noexec")
    kit.start_fails(name)
    broken = kit.spec(name, config=ProcessConfig(cmd=(MISSING_ENTRYPOINT,)))
    container_id = await kit.engine.create_container(name, broken, {})
    with pytest.raises(StartFailedError) as raised:
        await kit.engine.start_container(container_id)
    message = str(raised.value)
    # Named as a person knows it, also when started by id (as the update operations do).
    assert message.startswith(f"cannot start container {name}: ")
    assert "no such file or directory" in message
    state = (await kit.engine.inspect_container(name)).state
    assert state.status is not ContainerStatus.RUNNING
    assert state.exit_code != 0


async def test_logs_and_exit_code_of_a_container_that_exits(kit: Kit) -> None:
    name = kit.name("exits")
    lines = tuple(f"line {i}" for i in range(1, 8))
    kit.script_exit(name, lines, 3)
    script = "; ".join(f"echo '{line}'" for line in lines) + "; exit 3"
    once = RestartPolicy(type=RestartPolicyType.NO)
    spec = kit.spec(name, config=ProcessConfig(cmd=("sh", "-c", script)), restart=once)
    container_id = await kit.engine.create_container(name, spec, {})
    await kit.engine.start_container(container_id)
    async with asyncio.timeout(20):
        while (await kit.engine.inspect_container(name)).state.running:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    state = (await kit.engine.inspect_container(name)).state
    assert (state.status, state.exit_code, state.restart_count, state.health) == (
        ContainerStatus.EXITED, 3, 0, "",
    )  # fmt: skip
    assert await kit.engine.container_logs(container_id, 3) == ["line 5", "line 6", "line 7"]
    assert await kit.engine.container_logs(name, 0) == []
    with pytest.raises(ContainerNotFoundError):
        await kit.engine.container_logs(kit.name("nothing"), 3)


# --- events -------------------------------------------------------------------------------


async def test_events_for_create_start_stop_destroy(kit: Kit) -> None:
    engine = kit.engine
    events = engine.events()
    name = kit.name("ev")
    container_id = await engine.create_container(name, kit.spec(name), {})
    await engine.start_container(name)
    await engine.stop_container(name, grace_period=5)
    await engine.remove_container(name)
    seen = await _collect_until(events, container_id, EventAction.DESTROY)
    await events.aclose()  # type: ignore[attr-defined]
    wanted = [EventAction.CREATE, EventAction.START, EventAction.STOP, EventAction.DESTROY]
    assert [a for a in seen if a in wanted] == wanted
    assert EventAction.DIE in seen


async def test_events_carry_the_name_and_renames(kit: Kit) -> None:
    engine = kit.engine
    events = engine.events()
    old, new = kit.name("evold"), kit.name("evnew")
    container_id = await engine.create_container(old, kit.spec(old), {})
    await engine.rename_container(old, new)
    await engine.update_container(new, RestartPolicy(type=RestartPolicyType.NO), None)
    await engine.remove_container(new)
    got: list[ContainerEvent] = []
    async with asyncio.timeout(20):
        async for event in events:
            if event.container_id == container_id:
                got.append(event)
                if event.action is EventAction.DESTROY:
                    break
    await events.aclose()  # type: ignore[attr-defined]
    assert [e.action for e in got] == [
        EventAction.CREATE,
        EventAction.RENAME,
        EventAction.UPDATE,
        EventAction.DESTROY,
    ]
    assert got[0].name == old
    assert got[1].name == new


# --- images -------------------------------------------------------------------------------


async def test_pull_reports_progress_and_makes_the_image_present(kit: Kit) -> None:
    engine = kit.engine
    await kit.forget(kit.pullable)
    assert not await engine.image_present(kit.pullable)

    progress = [p async for p in engine.pull_image(kit.pullable)]
    assert progress[-1].complete
    assert progress[-1].image == kit.pullable
    assert progress[-1].total > 0
    assert progress[-1].done == progress[-1].total
    assert all(not p.complete for p in progress[:-1])
    dones = [p.done for p in progress]
    assert dones == sorted(dones)
    assert await engine.image_present(kit.pullable)

    assert [p async for p in ensure_image(engine, kit.pullable)] == []  # present: no pull
    again = [p async for p in ensure_image(engine, kit.pullable, always=True)]
    assert again[-1].complete


async def test_pull_of_a_missing_image_fails_with_the_registrys_reason(kit: Kit) -> None:
    with pytest.raises(PullFailedError) as raised:
        async for _ in kit.engine.pull_image(kit.missing):
            pass
    message = str(raised.value)
    assert message.startswith(f"cannot pull image {kit.missing}")
    assert "unknown" in message or "not found" in message
    assert not await kit.engine.image_present(kit.missing)
