"""The FakeEngine's test knobs (its contract with the real engine is tests/integration/
test_engine_contract.py, whose fake variants are unit tests too)."""

from __future__ import annotations

import pytest

from cua.containers.spec import ContainerSpec
from cua.containers.state import ContainerStatus
from cua.engine.base import EngineUnavailableError, EventAction, PullFailedError, StartFailedError
from cua.testing.fake_engine import EngineCall, FakeEngine

pytestmark = pytest.mark.unit


def _spec(name: str, image: str = "app:1") -> ContainerSpec:
    return ContainerSpec(name=name, image=image)


async def test_calls_are_logged_in_order() -> None:
    fake = FakeEngine()
    fake.add_image("app:1")
    await fake.list_containers()
    await fake.create_container("one", _spec("one"), {"k": "v"})
    await fake.start_container("one")
    assert [c.method for c in fake.calls] == [
        "list_containers",
        "create_container",
        "start_container",
    ]
    assert fake.calls[2] == EngineCall("start_container", ("one",))
    assert fake.call_count("start_container") == 1


async def test_add_container_prepopulates_without_calls_or_events() -> None:
    fake = FakeEngine()
    events = fake.events()
    running = fake.add_container("web", _spec("web", "web:2"), {"owner": "us"})
    fake.add_container(
        "old", _spec("old"), running=False, status=ContainerStatus.EXITED, exit_code=2
    )
    assert [c.method for c in fake.calls] == ["events"]
    assert await fake.image_present("web:2")
    details = await fake.inspect_container("web")
    assert details.id == running
    assert details.state.status is ContainerStatus.RUNNING
    assert details.labels == {"owner": "us"}
    old = await fake.inspect_container("old")
    assert (old.state.status, old.state.exit_code) == (ContainerStatus.EXITED, 2)
    await fake.close()
    assert [e async for e in events] == []


async def test_fail_start_by_name_or_image() -> None:
    fake = FakeEngine()
    fake.add_image("bad:1")
    fake.add_image("app:1")
    fake.fail_start("bad:1", "exec format error")
    await fake.create_container("x1", _spec("x1", "bad:1"), {})
    with pytest.raises(StartFailedError, match="cannot start container x1: exec format error"):
        await fake.start_container("x1")
    fake.fail_start("x2", "no space left")
    await fake.create_container("x2", _spec("x2"), {})
    with pytest.raises(StartFailedError, match="no space left"):
        await fake.start_container("x2")
    fake.clear_start_failure("x2")
    await fake.start_container("x2")


async def test_fail_pull_gives_the_reason() -> None:
    fake = FakeEngine()
    fake.add_registry_image("app:2")
    fake.fail_pull("app:2", "toomanyrequests: rate limited")
    with pytest.raises(PullFailedError, match="cannot pull image app:2: toomanyrequests"):
        async for _ in fake.pull_image("app:2"):
            pass
    assert not await fake.image_present("app:2")


async def test_fail_next_raises_once_per_queued_error() -> None:
    fake = FakeEngine()
    fake.add_container("c1", _spec("c1"))
    fake.fail_next("stop_container", RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        await fake.stop_container("c1")
    await fake.stop_container("c1")
    assert (await fake.inspect_container("c1")).state.status is ContainerStatus.EXITED


async def test_unavailable_engine_refuses_every_call() -> None:
    fake = FakeEngine()
    fake.add_container("c1", _spec("c1"))
    fake.available = False
    with pytest.raises(EngineUnavailableError):
        await fake.list_containers()
    with pytest.raises(EngineUnavailableError):
        await fake.inspect_container("c1")
    with pytest.raises(EngineUnavailableError):
        async for _ in fake.pull_image("app:1"):
            pass
    fake.available = True
    assert len(await fake.list_containers()) == 1


async def test_exit_container_emits_die_with_the_exit_code() -> None:
    fake = FakeEngine()
    events = fake.events()
    fake.add_container("c1", _spec("c1"))
    fake.exit_container("c1", 3)
    state = (await fake.inspect_container("c1")).state
    assert (state.status, state.exit_code) == (ContainerStatus.EXITED, 3)
    assert state.finished_at.endswith("Z")
    event = await anext(events)
    assert event.action is EventAction.DIE
    assert event.attributes["exitCode"] == "3"


async def test_inspect_returns_the_spec_it_was_created_from() -> None:
    fake = FakeEngine()
    fake.add_image("app:1")
    spec = _spec("orig")
    await fake.create_container("orig-tmp", spec, {})
    assert (await fake.inspect_container("orig-tmp")).spec is spec


def test_unreachable_reason_names_the_os_error_not_the_library() -> None:
    import errno

    from cua.engine.base import unreachable_reason

    class LibraryError(Exception):
        pass

    def chained(code: int) -> BaseException:
        try:
            try:
                raise OSError(code, "low level")
            except OSError as os_error:
                raise LibraryError("[900] Cannot connect to Docker Engine via ...") from os_error
        except LibraryError as error:
            return error

    assert unreachable_reason(chained(errno.ENOENT)).startswith("no such socket")
    assert unreachable_reason(chained(errno.ECONNREFUSED)).startswith("connection refused")
    assert unreachable_reason(chained(errno.EACCES)).startswith("permission denied")
    assert unreachable_reason(LibraryError("something else")) == "something else"
