"""The engine calls an update makes, counted on the fake engine: a RECREATE makes the calls
of the raw sequence (stop, remove, create, start) and only those others that identification,
rollback and crash recovery need; and the ways the fewer calls stay as safe (README,
Performance)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cua.api.models import DesiredState, DesiredStateFeedback, StatusType
from cua.containers.state import ContainerStatus
from cua.engine.base import EngineError
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.journal import journal_for
from cua.update.manager import UpdateManager
from cua.update.publisher import Delivered
from cua.update.recovery import recover
from tests.builders import (
    DOMAIN,
    M_STOPPED,
    act,
    add_managed,
    assert_only_container,
    component,
    desired,
    fb,
    operation,
    settings,
    status_of,
    until,
)

pytestmark = pytest.mark.unit

NAMES = ("api", "db", "web")


def state(web_image: str) -> DesiredState:
    return desired(*(component(n, image=web_image if n == "web" else "img:1") for n in NAMES))


class Agent:
    """`cua run`'s manager (standalone, journal on, recovery once at its start)."""

    def __init__(self, engine: FakeEngine, state_dir: Path | None, **overrides: Any) -> None:
        self.pub = RecordingPublisher()
        self.manager = UpdateManager(
            engine, self.pub, settings(**overrides), journal_for(state_dir, DOMAIN)
        )

    async def apply(self, activity_id: str, desired_state: DesiredState) -> str:
        self.manager.submit_desired_state(activity_id, desired_state)
        final = ("COMPLETED", "INCOMPLETE")
        await until(lambda: bool(set(self.pub.statuses(activity_id)) & set(final)))
        return self.pub.statuses(activity_id)[-1]


@pytest.fixture
async def agent(engine: FakeEngine, tmp_path: Path) -> AsyncIterator[Agent]:
    engine.add_image("img:1")
    engine.add_image("img:2")
    running = Agent(engine, tmp_path, activation_window=0.0)
    task = asyncio.create_task(running.manager.run())
    try:
        assert await running.apply("setup", state("img:1")) == "COMPLETED"
        assert await running.apply("settle", state("img:1")) == "COMPLETED"  # reads each once
        yield running
    finally:
        await asyncio.wait_for(running.manager.stop(), 5)
        await task


def calls(engine: FakeEngine) -> list[tuple[str, tuple[Any, ...]]]:
    """The calls made, with container names and ids as the engine knows them now."""
    return [(call.method, call.args[:2]) for call in engine.calls]


async def test_recreate_of_one_of_three_makes_exactly_these_engine_calls(
    engine: FakeEngine, agent: Agent
) -> None:
    old_id = (await engine.inspect_container("web")).id
    engine.calls.clear()
    assert await agent.apply("change", state("img:2")) == "COMPLETED"
    found = calls(engine)
    new_id = (await engine.inspect_container("web")).id
    create = found[2]
    assert create[0] == "create_container"
    assert create[1][0] == "web.cua-new"
    assert found[:2] + found[3:6] == [
        ("list_containers", ()),  # identification (the others are settled)
        ("image_present", ("img:2",)),
        # UPDATE: the renames of ACTIVATE done while the engine stops the old container
        ("stop_container", (old_id, 0.0)),
        ("rename_container", (old_id, "web.cua-old")),
        ("rename_container", (new_id, "web")),
    ]
    # ACTIVATE: the start, and the state of the two checked containers (one listing, in
    # parallel)
    assert sorted(found[6:8]) == [("list_containers", ()), ("start_container", (new_id,))]
    # CLEANUP: the journal's commit record says the removal is final: no `.cua-removed`
    # rename first
    assert found[8:] == [("remove_container", (old_id,))]
    assert sorted(engine.container_names()) == sorted(NAMES)


async def test_without_a_journal_the_old_container_is_renamed_before_its_removal(
    engine: FakeEngine,
) -> None:
    """`cua apply` (no journal): the `.cua-removed` name is what tells recovery that the
    removal is committed."""
    add_managed(engine, "web", image="img:1")
    old_id = (await engine.inspect_container("web")).id
    manager = UpdateManager(engine, RecordingPublisher(), settings(), journal_for(None, DOMAIN))
    assert await manager.apply("A", desired(component("web", image="img:2"))) == "COMPLETED"
    renames = [c.args for c in engine.calls if c.method == "rename_container"]
    assert renames[-1] == (old_id, "web.cua-removed")
    last = engine.calls[-1]
    assert (last.method, last.args) == ("remove_container", (old_id,))


async def test_a_failed_removal_after_the_commit_record_is_finished_by_recovery(
    engine: FakeEngine, agent: Agent, tmp_path: Path
) -> None:
    engine.fail_next("remove_container", EngineError("device or resource busy"))
    assert await agent.apply("change", state("img:2")) == "COMPLETED"  # as Kanto
    # The removal failed: the name says it is committed (the journal goes at the end).
    assert sorted(engine.container_names()) == ["api", "db", "web", "web.cua-removed"]
    new_id = (await engine.inspect_container("web")).id
    done = await recover(engine, journal_for(tmp_path, DOMAIN), domain=DOMAIN)
    assert done == ["web.cua-removed: removal committed by CLEANUP finished"]
    assert sorted(engine.container_names()) == sorted(NAMES)
    details = await engine.inspect_container("web")
    assert (details.id, details.spec.image) == (new_id, "img:2")


async def test_a_crash_between_the_commit_record_and_the_removal_keeps_the_update(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    """The old container is still `.cua-old` (no `.cua-removed` rename before the removal):
    the commit record alone makes recovery finish the removal, not undo the update."""
    old_id = add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")), state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE"):
        await op.command(command, "")
    new_id = (await engine.inspect_container("web")).id
    op._steps.journal_commit(op.actions)  # CLEANUP's record; the agent dies here
    assert sorted(engine.container_names()) == ["web", "web.cua-old"]
    done = await recover(engine, journal_for(tmp_path, DOMAIN), domain=DOMAIN)
    assert done == ["web: removal committed by CLEANUP finished"]
    await assert_only_container(engine, "web", new_id)
    assert old_id not in engine._containers


@pytest.mark.parametrize("failing", ["stop_container", "rename_container"])
async def test_a_failure_of_the_stop_or_the_renames_beside_it_is_rolled_back(
    engine: FakeEngine, pub: RecordingPublisher, failing: str
) -> None:
    """Standalone UPDATE stops the old container and renames both at once: whichever
    fails, UPDATE fails with its error, and the old container runs again under its name."""
    old_id = add_managed(engine, "web", image="img:1")
    engine.fail_next(failing, EngineError(f"{failing} refused"))
    manager = UpdateManager(engine, pub, settings())
    assert await manager.apply("A", desired(component("web", image="img:2"))) == "INCOMPLETE"
    wire = pub.wire("A")
    update_failure = next(m for m in wire if m["status"] == "UPDATE_FAILURE")
    assert update_failure == fb(
        "UPDATE_FAILURE", act("web", "UPDATE_FAILURE", f"{failing} refused")
    )
    await assert_only_container(engine, "web", old_id)


async def test_crash_after_the_straight_on_update_is_recovered(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    """A standalone operation killed after UPDATE (the new container holds the name, not
    started; the old one stopped, `.cua-old`): recovery puts the old one back, running."""
    old_id = add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")), state_dir=tmp_path)
    op._straight_on = True  # as `run_standalone` runs it
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    assert pub.wire()[-1] == fb("UPDATE_SUCCESS", act("web", "UPDATE_SUCCESS", M_STOPPED, "1.0"))
    assert sorted(engine.container_names()) == ["web", "web.cua-old"]
    assert status_of(engine, "web.cua-old") is ContainerStatus.EXITED
    await recover(engine, journal_for(tmp_path, DOMAIN), domain=DOMAIN)
    await assert_only_container(engine, "web", old_id)


async def test_orchestrated_update_leaves_the_names_until_activate(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """The update manager may wait long before ACTIVATE: the stopped old container keeps
    its name meanwhile, and the new one its temporary name."""
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    assert sorted(engine.container_names()) == ["web", "web.cua-new"]
    assert engine.call_count("rename_container") == 0
    assert status_of(engine, "web") is ContainerStatus.EXITED


class NamesAtUpdateSuccess(RecordingPublisher):
    """Records the engine's container names when UPDATE_SUCCESS is published."""

    def __init__(self, engine: FakeEngine) -> None:
        super().__init__()
        self.engine = engine
        self.names: list[str] = []

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Delivered | None = None,
    ) -> None:
        if feedback.status is StatusType.UPDATE_SUCCESS:
            self.names = sorted(self.engine.container_names())
        await super().publish_feedback(activity_id, feedback, on_delivered)


async def test_standalone_update_gives_the_new_container_its_name(engine: FakeEngine) -> None:
    add_managed(engine, "web", image="img:1")
    pub = NamesAtUpdateSuccess(engine)
    manager = UpdateManager(engine, pub, settings())
    assert await manager.apply("A", desired(component("web", image="img:2"))) == "COMPLETED"
    assert pub.names == ["web", "web.cua-old"]


async def test_extra_hosts_naming_containers_keep_the_renames_at_activate(
    engine: FakeEngine,
) -> None:
    """A new container whose extra hosts name other containers may be created again at its
    start, under its temporary name: it takes the name only then."""
    add_managed(engine, "db", image="img:1")
    add_managed(engine, "web", image="img:1", host="db:container_db-host")
    state = desired(
        component("db", image="img:1"), component("web", image="img:2", host="db:container_db-host")
    )
    pub = NamesAtUpdateSuccess(engine)
    manager = UpdateManager(engine, pub, settings())
    assert await manager.apply("A", state) == "COMPLETED"
    assert pub.names == ["db", "web", "web.cua-new"]
    assert sorted(engine.container_names()) == ["db", "web"]
