"""After a crash (our-behaviour "After a crash"), on the fake engine: recovery ends every
component running as its old state says even when the engine is still carrying out a stop
the dead agent asked for; it touches only this domain's containers; the interrupted
activity gets its final status and its later commands their failure; the journal and the
state directory are hardened."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from cua.api.models import DesiredStateCommand, DesiredStateFeedback
from cua.cli import main
from cua.containers.labels import encode_labels
from cua.containers.parse import parse_component
from cua.containers.state import ContainerDetails, ContainerStatus
from cua.settings import Mode
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.journal import (
    Journal,
    JournalError,
    UnsafeStateDirError,
    journal_for,
    journal_path,
    prepare_state_dir,
)
from cua.update.manager import UpdateManager
from cua.update.names import operation_labels
from cua.update.publisher import Delivered
from cua.update.recovery import recover
from tests.builders import (
    DOMAIN,
    GatedPublisher,
    add_managed,
    component,
    desired,
    settings,
    status_of,
    until,
)

pytestmark = pytest.mark.unit


class StopInFlight(FakeEngine):
    """The dead agent asked the engine to stop `stopping`; the engine is still at it (the
    container ignores SIGTERM): it looks running when recovery first reads it, then exits."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping: str | None = None

    async def inspect_container(self, container: str) -> ContainerDetails:
        details = await super().inspect_container(container)
        if details.id == self.stopping:
            self.stopping = None
            self.exit_container(details.id, exit_code=137)  # the stop ends just after
        return details


def agent_manager(
    engine: FakeEngine, publisher: RecordingPublisher, state_dir: Path, **overrides: object
) -> UpdateManager:
    """As `cua run` makes it: with the journal of its state directory."""
    return UpdateManager(engine, publisher, settings(**overrides), journal_for(state_dir, DOMAIN))


async def run_until_recovered(manager: UpdateManager, path: Path) -> None:
    task = asyncio.create_task(manager.run())
    await until(lambda: not path.exists())
    await manager.stop()
    await task


@pytest.mark.parametrize("kind", ["DESTROY", "RECREATE"])
async def test_a_stop_still_in_flight_at_restart_ends_with_the_container_running(
    tmp_path: Path, kind: str
) -> None:
    engine = StopInFlight()
    engine.add_registry_image("img:2")
    old = add_managed(engine, "web", image="img:1")
    path = journal_path(tmp_path, "containers")
    journal = Journal(path)
    journal.started("A")
    if kind == "RECREATE":  # the new container was made in DOWNLOAD
        parsed = parse_component(component("web", image="img:1", env="A=1"))
        labels = encode_labels(parsed, "containers") | operation_labels("A", True)
        new = engine.add_container("web.cua-new", parsed.spec, labels, running=False)
        journal.created("A", new, "web")
    journal.stopped("A", old, "web")  # killed while the engine stops it
    engine.stopping = old
    pub = RecordingPublisher()
    await run_until_recovered(agent_manager(engine, pub, tmp_path), path)
    assert engine.container_names() == ["web"]
    assert (await engine.inspect_container("web")).id == old
    assert status_of(engine, "web") is ContainerStatus.RUNNING


async def test_recovery_leaves_another_domains_operation_alone(engine: FakeEngine) -> None:
    """Agents of two domains on one engine: one's restart never touches the other's
    containers in flight (they are the other agent's running operation)."""
    parsed = parse_component(component("web", image="img:1"))
    theirs = encode_labels(parsed, "trucks") | operation_labels("T", True)
    engine.add_container("web.cua-new", parsed.spec, theirs, running=False)
    engine.add_container("web", parsed.spec, encode_labels(parsed, "trucks"))
    engine.add_container("db.cua-removed", parsed.spec, encode_labels(parsed, "trucks"))
    assert await recover(engine, domain="cars") == []
    assert sorted(engine.container_names()) == ["db.cua-removed", "web", "web.cua-new"]
    done = await recover(engine, domain="trucks")
    assert "web: new container of an unfinished operation removed" in done
    assert engine.container_names() == ["web"]


async def test_the_interrupted_activity_gets_incomplete_saying_what_was_restored(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    gone = add_managed(engine, "gone", image="img:1", running=False)
    path = journal_path(tmp_path, "containers")
    Journal(path).started("A")
    Journal(path).stopped("A", gone, "gone")
    manager = UpdateManager(
        engine, pub, settings(mode=Mode.ORCHESTRATED), journal_for(tmp_path, DOMAIN)
    )
    task = asyncio.create_task(manager.run())
    await until(lambda: bool(pub.wire("A")))
    [final] = pub.wire("A")
    assert final["status"] == "INCOMPLETE"
    assert final["message"] == (
        "the agent restarted during this operation; recovery did: "
        "gone: container stopped by the operation started again"
    )
    # An update manager that goes on with the operation gets the failure, with the reason.
    manager.submit_command("A", DesiredStateCommand(command="UPDATE", baseline="b"))
    await until(lambda: len(pub.wire("A")) == 2)
    assert pub.wire("A")[1] == {
        "baseline": "b",
        "status": "UPDATE_FAILURE",
        "message": final["message"],
    }
    manager.report_invalid_command("A", DesiredStateCommand(command="CLEANUP").command, "bad")
    await until(lambda: len(pub.wire("A")) == 3)
    assert pub.wire("A")[2]["status"] == "CLEANUP_FAILURE"
    await manager.stop()
    await task
    assert status_of(engine, "gone") is ContainerStatus.RUNNING


async def test_interrupted_before_any_change_is_answered_too(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    """Killed right after IDENTIFIED (orchestrated: waiting for DOWNLOAD)."""
    orchestrated = settings(mode=Mode.ORCHESTRATED)
    killed = UpdateManager(
        engine, RecordingPublisher(), orchestrated, journal_for(tmp_path, DOMAIN)
    )
    task = asyncio.create_task(killed.run())
    killed.submit_desired_state("A", desired(component("web", image="img:1")))
    path = journal_path(tmp_path, "containers")
    await until(path.exists)
    task.cancel()  # the agent dies (no graceful stop)
    with pytest.raises(asyncio.CancelledError):
        await task
    manager = UpdateManager(
        engine, pub, settings(mode=Mode.STANDALONE), journal_for(tmp_path, DOMAIN)
    )
    await run_until_recovered(manager, path)
    assert pub.wire("A") == [
        {
            "status": "INCOMPLETE",
            "message": "the agent restarted during this operation; there was nothing to restore",
        }
    ]


class StopAt(RecordingPublisher):
    """Asks the manager to stop (SIGTERM) when a feedback of `status` is published."""

    def __init__(self, status: str) -> None:
        super().__init__()
        self.status = status
        self.manager: UpdateManager | None = None
        self.stopping: asyncio.Task[None] | None = None

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Delivered | None = None,
    ) -> None:
        await super().publish_feedback(activity_id, feedback, on_delivered)
        if feedback.status == self.status and self.manager is not None and not self.stopping:
            self.stopping = asyncio.create_task(self.manager.stop())
            await asyncio.sleep(0)  # the signal handler runs: stop() asks the operation


async def test_an_operation_stopped_gracefully_is_not_answered_twice(
    engine: FakeEngine, tmp_path: Path
) -> None:
    add_managed(engine, "gone", image="img:1")
    pub = StopAt("UPDATING")
    manager = pub.manager = agent_manager(engine, pub, tmp_path)
    task = asyncio.create_task(manager.run())
    manager.submit_desired_state("A", desired())
    await task
    assert pub.statuses("A")[-2:] == ["UPDATE_FAILURE", "INCOMPLETE"]
    count = len(pub.wire("A"))
    path = journal_path(tmp_path, "containers")
    assert path.exists()
    again = agent_manager(engine, pub, tmp_path)
    again.submit_command("A", DesiredStateCommand(command="CLEANUP"))
    await run_until_recovered(again, path)
    # Its final status was published already; a later command still gets its answer.
    assert [m["status"] for m in pub.wire("A")[count:]] == ["CLEANUP_FAILURE"]
    assert status_of(engine, "gone") is ContainerStatus.RUNNING


async def test_a_graceful_stop_whose_incomplete_the_broker_never_got_is_answered_after(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """The agent stopped (SIGTERM) with the broker down: its INCOMPLETE never left."""
    add_managed(engine, "gone", image="img:1")
    pub = StopAt("UPDATING")
    pub.acknowledge = False
    manager = pub.manager = agent_manager(engine, pub, tmp_path)
    task = asyncio.create_task(manager.run())
    manager.submit_desired_state("A", desired())
    await task
    assert pub.statuses("A")[-1] == "INCOMPLETE"
    again = RecordingPublisher()
    await run_until_recovered(
        agent_manager(engine, again, tmp_path), journal_path(tmp_path, DOMAIN)
    )
    assert again.statuses("A") == ["INCOMPLETE"]
    assert again.wire("A")[0]["message"].startswith("the agent restarted during this operation")
    assert status_of(engine, "gone") is ContainerStatus.RUNNING


# --- the journal and the state directory --------------------------------------------------


def test_the_journal_is_never_written_or_read_through_a_symbolic_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    path = journal_path(tmp_path, "containers")
    path.symlink_to(target)
    with pytest.raises(JournalError):
        Journal(path).started("A")
    assert target.read_text() == "precious\n"
    target.write_text('{"v":1,"activity":"A","step":"stopped","id":"x","name":"x"}\n')
    assert Journal(path).read() == []  # refused (logged), not followed


def test_a_state_dir_others_can_write_fails_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for mode in (0o777, 0o770, 0o702):
        os.chmod(state, mode)
        with pytest.raises(UnsafeStateDirError, match="writable by group or others"):
            prepare_state_dir(state)
    assert main(["run", "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cua: error: update_agent.state_dir: {state}: writable by group")
    os.chmod(state, 0o755)  # others may read: fine
    assert prepare_state_dir(state) == state
    assert stat.S_IMODE(state.stat().st_mode) == 0o755


async def test_an_activity_that_ends_at_identification_leaves_no_journal(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    add_managed(engine, "web", image="img:1")
    manager = agent_manager(engine, pub, tmp_path)
    assert await manager.apply("A", desired(component("web", image="img:1"))) == "COMPLETED"
    engine.add_container("db", parse_component(component("db", image="img:1")).spec)
    failed = await manager.apply("B", desired(component("db", image="img:1")))
    assert failed == "IDENTIFICATION_FAILED"
    assert not journal_path(tmp_path, "containers").exists()


# --- the final status is owed until the broker acknowledges it ---------------------------


async def test_a_final_status_not_acknowledged_before_a_kill_is_published_again(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """Killed after CLEANUP_SUCCESS went out, before the broker acknowledged COMPLETED: the
    next start publishes COMPLETED (again: at least once) and restores nothing."""
    add_managed(engine, "web", image="img:1")
    gone = add_managed(engine, "gone", image="img:1")
    engine.add_registry_image("img:2")
    killed = RecordingPublisher(acknowledge=False)
    manager = agent_manager(engine, killed, tmp_path)
    assert await manager.apply("A", desired(component("web", image="img:2"))) == "COMPLETED"
    new_web = (await engine.inspect_container("web")).id
    path = journal_path(tmp_path, DOMAIN)
    assert path.exists()  # the agent dies here: COMPLETED may never reach the broker
    pub = RecordingPublisher()
    await run_until_recovered(agent_manager(engine, pub, tmp_path), path)
    assert pub.wire("A") == [{"status": "COMPLETED"}]
    assert engine.container_names() == ["web"]  # nothing undone: the update is final
    assert (await engine.inspect_container("web")).id == new_web
    assert gone not in {c.id for c in await engine.list_containers()}


async def test_the_final_status_of_a_superseded_operation_is_owed_too(
    engine: FakeEngine, tmp_path: Path
) -> None:
    add_managed(engine, "web", image="img:1")
    engine.add_registry_image("img:2")
    killed = RecordingPublisher(acknowledge=False)
    manager = agent_manager(engine, killed, tmp_path, mode=Mode.ORCHESTRATED)
    task = asyncio.create_task(manager.run())
    manager.submit_desired_state("A", desired(component("web", image="img:2")))
    await until(lambda: killed.statuses("A")[-1:] == ["IDENTIFIED"])
    manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD"))
    await until(lambda: killed.statuses("A")[-1:] == ["DOWNLOAD_SUCCESS"])
    manager.submit_desired_state("B", desired(component("web", image="img:3")))
    await until(lambda: "SUPERSEDED" in killed.statuses("A"))
    await until(lambda: killed.statuses("B")[-1:] == ["IDENTIFIED"])
    task.cancel()  # the agent dies: nothing was acknowledged
    with pytest.raises(asyncio.CancelledError):
        await task
    pub = RecordingPublisher()
    path = journal_path(tmp_path, DOMAIN)
    await run_until_recovered(agent_manager(engine, pub, tmp_path), path)
    assert pub.wire("A") == [
        {"status": "SUPERSEDED", "message": "replaced by a newer desired state (activityId B)"}
    ]
    assert pub.wire("B") == [
        {
            "status": "INCOMPLETE",
            "message": "the agent restarted during this operation; there was nothing to restore",
        }
    ]
    assert engine.container_names() == ["web"]


async def test_an_acknowledgement_after_the_next_operation_began_keeps_its_records(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """A's COMPLETED is acknowledged while B runs (standalone: B starts at once): only A's
    records go; B, killed mid-operation, is restored and answered at the next start."""
    add_managed(engine, "web", image="img:1")
    engine.add_registry_image("img:2")

    class HoldB(GatedPublisher):
        async def publish_feedback(
            self,
            activity_id: str,
            feedback: DesiredStateFeedback,
            on_delivered: Delivered | None = None,
        ) -> None:
            await RecordingPublisher.publish_feedback(self, activity_id, feedback, on_delivered)
            if activity_id == "B" and feedback.status == self.status:
                await self.gate.wait()

    pub = HoldB("UPDATE_SUCCESS")
    pub.acknowledge = False
    manager = agent_manager(engine, pub, tmp_path)
    task = asyncio.create_task(manager.run())
    manager.submit_desired_state("A", desired(component("web", image="img:2")))
    await until(lambda: pub.statuses("A")[-1:] == ["COMPLETED"])
    manager.submit_desired_state("B", desired())  # B stops `web`, held after that
    await until(lambda: pub.statuses("B")[-1:] == ["UPDATE_SUCCESS"])
    await until(lambda: status_of(engine, "web") is ContainerStatus.EXITED)
    pub.acknowledge_all()  # the broker acknowledges everything so far: A's end among it
    path = journal_path(tmp_path, DOMAIN)
    assert {entry.activity for entry in Journal(path).read()} == {"B"}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    again = RecordingPublisher()
    await run_until_recovered(agent_manager(engine, again, tmp_path), path)
    assert again.wire("A") == []
    assert again.statuses("B") == ["INCOMPLETE"]
    assert status_of(engine, "web") is ContainerStatus.RUNNING


def test_closing_an_activity_keeps_a_later_one_even_of_the_same_id(tmp_path: Path) -> None:
    path = journal_path(tmp_path, DOMAIN)
    journal = Journal(path)
    journal.started("A")
    journal.stopped("A", "id1", "web")
    journal.finished("A", "COMPLETED")
    journal.started("B")
    journal.started("A")  # an update manager reusing an activityId: a new operation
    journal.close("A")
    assert [(e.activity, e.step.value) for e in journal.read()] == [
        ("B", "started"),
        ("A", "started"),
    ]
    journal.close("B")
    journal.close("A")
    assert not path.exists()
