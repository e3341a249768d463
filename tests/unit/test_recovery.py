"""Crash recovery: from the operation journal, and from container names and labels.

A crash is simulated by driving an `Operation` with commands and then dropping it without
CLEANUP, or by containers left as an operation leaves them; recovery then runs as at the
next start (a fresh manager, or `recover`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from pathlib import Path

import pytest

from cua.api.models import DesiredStateCommand, DesiredStateFeedback
from cua.cli import main
from cua.containers.labels import encode_labels
from cua.containers.parse import parse_component
from cua.containers.spec import RestartPolicy, RestartPolicyType
from cua.containers.state import ContainerStatus
from cua.engine.base import EngineError, EngineUnavailableError
from cua.settings import Mode
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.journal import Journal, journal_for, journal_path, prepare_state_dir
from cua.update.manager import UpdateManager
from cua.update.names import operation_labels
from cua.update.publisher import Delivered
from cua.update.recovery import recover
from tests.builders import (
    DOMAIN,
    Running,
    add_managed,
    assert_only_container,
    component,
    desired,
    memory_limits,
    operation,
    settings,
    status_of,
    until,
)

pytestmark = pytest.mark.unit


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_only_incomplete_owed(path: Path | None) -> None:
    """After `recover`, the journal holds nothing but the interrupted activity's final
    status, owed until the broker has it (the update manager publishes it)."""
    assert path is not None
    [owed] = records(path)
    assert (owed["step"], owed["status"], owed["interrupted"]) == ("finished", "INCOMPLETE", True)


async def test_destroy_stopped_container_runs_again_at_next_start(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    gone_id = add_managed(engine, "gone", image="img:1")
    op = await operation(engine, pub, desired(), state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    assert status_of(engine, "gone") is ContainerStatus.EXITED
    path = journal_path(tmp_path, "containers")
    assert records(path) == [
        {"v": 1, "activity": "A", "step": "stopped", "id": gone_id, "name": "gone"}
    ]
    # The agent dies here. At the next start, run() recovers before serving anything.
    manager = UpdateManager(engine, RecordingPublisher(), settings(), journal_for(tmp_path, DOMAIN))
    task = asyncio.create_task(manager.run())
    async with asyncio.timeout(5.0):
        while path.exists():  # noqa: ASYNC110 - recovery has no event to wait on
            await asyncio.sleep(0.005)
    await manager.stop()
    await task
    assert status_of(engine, "gone") is ContainerStatus.RUNNING
    assert engine.container_names() == ["gone"]


async def test_update_restores_previous_restart_policy_and_limits(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    add_managed(engine, "svc", image="img:1", restartPolicy="no", memory="100M")
    state = desired(component("svc", image="img:1", restartPolicy="always", memory="200M"))
    op = await operation(engine, pub, state, state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE"):
        await op.command(command, "")
    spec = (await engine.inspect_container("svc")).spec
    assert (spec.restart.type, spec.resources) == (RestartPolicyType.ALWAYS, memory_limits("200M"))
    journal = journal_for(tmp_path, DOMAIN)
    done = await recover(engine, journal)
    assert done == ["svc: previous restart policy and memory limits restored"]
    spec = (await engine.inspect_container("svc")).spec
    assert spec.restart == RestartPolicy(RestartPolicyType.NO)
    assert spec.resources == memory_limits(memory="100M")
    assert status_of(engine, "svc") is ContainerStatus.RUNNING
    assert journal.path is not None
    assert_only_incomplete_owed(journal.path)


async def test_activated_create_is_removed_and_recreate_put_back(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    """Before CLEANUP, an operation is undone: even a CREATE that took its real name."""
    old_id = add_managed(engine, "web", image="img:1")
    state = desired(component("web", image="img:2"), component("fresh", image="img:1"))
    op = await operation(engine, pub, state, state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE"):
        await op.command(command, "")
    assert sorted(engine.container_names()) == ["fresh", "web", "web.cua-old"]
    await recover(engine, journal_for(tmp_path, DOMAIN))
    await assert_only_container(engine, "web", old_id)


async def test_baseline_cleaned_up_before_the_crash_stays(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    """CLEANUP commits a baseline: recovery undoes only the rest of the operation."""
    add_managed(engine, "svc", image="img:1", restartPolicy="no")
    add_managed(engine, "gone", image="img:1")
    state = desired(
        component("svc", image="img:1", restartPolicy="always"),
        baselines={"one": ["containers:svc"]},
    )
    op = await operation(engine, pub, state, state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP"):
        await op.command(command, "one")
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "containers:remove-components")
    assert status_of(engine, "gone") is ContainerStatus.EXITED
    done = await recover(engine, journal_for(tmp_path, DOMAIN))
    assert done == ["gone: container stopped by the operation started again"]
    assert (await engine.inspect_container("svc")).spec.restart.type is RestartPolicyType.ALWAYS
    assert status_of(engine, "gone") is ContainerStatus.RUNNING


async def test_committed_destroy_removal_is_finished(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    gone_id = add_managed(engine, "gone", image="img:1")
    op = await operation(engine, pub, desired(), state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE"):
        await op.command(command, "")
    # CLEANUP committed (its records written) but the agent died before the removal.
    op._steps.journal_commit(op.actions)
    done = await recover(engine, journal_for(tmp_path, DOMAIN))
    assert done == ["gone: removal committed by CLEANUP finished"]
    assert engine.container_names() == []
    assert gone_id not in engine._containers


async def test_torn_last_line_is_ignored(
    engine: FakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone_id = add_managed(engine, "gone", image="img:1", running=False)
    path = journal_path(tmp_path, "containers")
    Journal(path).stopped("A", gone_id, "gone")
    with path.open("ab") as file:
        file.write(b'{"v":1,"activity":"A","step":"upd')  # the crash cut this write
    with caplog.at_level(logging.WARNING):
        done = await recover(engine, Journal(path))
    assert done == ["gone: container stopped by the operation started again"]
    assert "line 2 unreadable, ignored" in caplog.text
    assert status_of(engine, "gone") is ContainerStatus.RUNNING
    assert_only_incomplete_owed(path)


async def test_stopped_container_renamed_since_is_left_alone(
    engine: FakeEngine, tmp_path: Path
) -> None:
    other_id = add_managed(engine, "other", image="img:1", running=False)
    path = journal_path(tmp_path, "containers")
    Journal(path).stopped("A", other_id, "gone")
    Journal(path).stopped("A", "no-such-id", "vanished")
    assert await recover(engine, Journal(path)) == []
    assert status_of(engine, "other") is ContainerStatus.CREATED  # not started
    assert_only_incomplete_owed(path)


class SnapshotPublisher(RecordingPublisher):
    """Keeps the journal's content as it was at each feedback."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.snapshots: list[tuple[str, str | None]] = []

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Delivered | None = None,
    ) -> None:
        content = self.path.read_text() if self.path.exists() else None
        self.snapshots.append((str(feedback.status), content))
        await super().publish_feedback(activity_id, feedback, on_delivered)


async def test_journal_removed_at_the_end_and_holds_no_env_value(
    engine: FakeEngine, tmp_path: Path
) -> None:
    add_managed(engine, "web", image="img:1", env="TOKEN=s3cr3t-old")
    add_managed(engine, "svc", image="img:1", restartPolicy="no")
    add_managed(engine, "gone", image="img:1")
    path = journal_path(tmp_path, "containers")
    pub = SnapshotPublisher(path)
    state = desired(
        component("web", image="img:2", env="TOKEN=s3cr3t-new"),
        component("svc", image="img:1", restartPolicy="always"),
        component("fresh", image="img:1", env="PASSWORD=hunter2"),
    )
    manager = UpdateManager(engine, pub, settings(), journal_for(tmp_path, DOMAIN))
    assert await manager.apply("A", state) == "COMPLETED"
    assert not path.exists()
    content = dict(pub.snapshots)["ACTIVATION_SUCCESS"]
    assert content is not None
    steps = [(r["step"], r["name"]) for r in map(json.loads, content.splitlines())]
    assert sorted(steps) == [  # the creates may run in parallel
        ("created", "fresh"),
        ("created", "web"),
        ("started", ""),  # identification began: answered after a restart
        ("stopped", "gone"),
        ("stopped", "web"),
        ("updated", "svc"),
    ]
    for _, seen in pub.snapshots:
        for secret in ("s3cr3t", "hunter2", "TOKEN", "PASSWORD"):
            assert seen is None or secret not in seen


async def test_superseded_operation_removes_its_journal(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    add_managed(engine, "gone", image="img:1")
    op = await operation(engine, pub, desired(), state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    path = journal_path(tmp_path, "containers")
    assert path.exists()
    await op.supersede("replaced")
    assert not path.exists()
    assert status_of(engine, "gone") is ContainerStatus.RUNNING


async def test_no_journal_without_state_dir(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    add_managed(engine, "gone", image="img:1")
    op = await operation(engine, pub, desired())
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    assert not journal_path(tmp_path, "containers").exists()
    assert await recover(engine, journal_for(None, DOMAIN)) == []
    assert status_of(engine, "gone") is ContainerStatus.EXITED


def test_prepare_state_dir_creates_it_private(tmp_path: Path) -> None:
    state = tmp_path / "var" / "cua"
    assert prepare_state_dir(state) == state
    assert stat.S_IMODE(state.stat().st_mode) & 0o077 == 0
    assert list(state.iterdir()) == []


def test_run_with_unusable_state_dir_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "--state-dir", str(blocker / "state")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"cua: error: update_agent.state_dir: {blocker / 'state'}: ")


async def test_agent_stop_keeps_the_journal_of_an_unfinished_operation(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    """A graceful stop interrupts the operation as a crash would: recovered at next start."""
    add_managed(engine, "gone", image="img:1")
    manager = UpdateManager(
        engine, pub, settings(mode=Mode.ORCHESTRATED), journal_for(tmp_path, DOMAIN)
    )
    task = asyncio.create_task(manager.run())
    manager.submit_desired_state("A", desired())
    for command in ("DOWNLOAD", "UPDATE"):
        manager.submit_command("A", DesiredStateCommand(command=command))
    await until(lambda: "UPDATE_SUCCESS" in pub.statuses("A"))
    await manager.stop()
    await task
    path = journal_path(tmp_path, "containers")
    assert path.exists()
    assert status_of(engine, "gone") is ContainerStatus.EXITED
    again = UpdateManager(engine, pub, settings(), journal_for(tmp_path, DOMAIN))
    task = asyncio.create_task(again.run())
    await until(lambda: not path.exists())
    await again.stop()
    await task
    assert status_of(engine, "gone") is ContainerStatus.RUNNING


async def test_recovery_retried_before_the_next_operation_when_the_engine_was_down(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    # Not ours (manage: labelled): only the journal can start it again.
    spec = parse_component(component("gone", image="img:1")).spec
    gone_id = engine.add_container("gone", spec, running=False)
    path = journal_path(tmp_path, "containers")
    Journal(path).stopped("A", gone_id, "gone")
    engine.fail_next("list_containers", EngineUnavailableError("engine down"))
    manager = UpdateManager(engine, pub, settings(), journal_for(tmp_path, DOMAIN))
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0.02)
    assert path.exists()  # kept: recovery did not run
    assert status_of(engine, "gone") is ContainerStatus.CREATED
    manager.submit_desired_state("B", desired())  # nothing to do: recovery runs first
    await until(lambda: "COMPLETED" in pub.statuses("B"))
    await manager.stop()
    await task
    assert status_of(engine, "gone") is ContainerStatus.RUNNING
    assert not path.exists()


async def test_a_container_that_cannot_start_does_not_stop_recovery(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    add_managed(engine, "aaa", image="img:1")
    add_managed(engine, "zzz", image="img:1")
    state = desired(component("aaa", image="img:2"), component("zzz", image="img:2"))
    op = await operation(engine, pub, state, state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    engine.fail_start("aaa", "exec: no such file or directory")
    done = await recover(engine, journal_for(tmp_path, DOMAIN))
    assert "zzz: old container started again" in done
    assert sorted(engine.container_names()) == ["aaa", "zzz"]
    assert status_of(engine, "aaa") is ContainerStatus.EXITED
    assert status_of(engine, "zzz") is ContainerStatus.RUNNING
    assert_only_incomplete_owed(journal_path(tmp_path, "containers"))


async def test_unreadable_journal_is_logged_and_recovery_goes_on(
    engine: FakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = journal_path(tmp_path, "containers")
    path.mkdir()  # not a file: cannot be read nor removed
    with caplog.at_level(logging.ERROR):
        assert await recover(engine, Journal(path)) == []
    assert f"cannot read the journal {path}" in caplog.text
    assert f"cannot rewrite the journal {path}" in caplog.text


# --- recovery by names and labels (no journal) ------------------------------------------------


def _new_container(engine: FakeEngine, name: str, image: str, replaces_running: bool | None) -> str:
    parsed = parse_component(component(name, image=image))
    labels = encode_labels(parsed, DOMAIN) | operation_labels("old-op", replaces_running)
    return engine.add_container(name + ".cua-new", parsed.spec, labels, running=False)


async def test_recovery_after_crash_between_activation_renames(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    parsed = parse_component(component("web", image="img:1"))
    old_id = engine.add_container(
        "web.cua-old", parsed.spec, encode_labels(parsed, DOMAIN), status=ContainerStatus.EXITED
    )
    _new_container(engine, "web", "img:2", replaces_running=True)
    _new_container(engine, "fresh", "img:1", replaces_running=None)
    async with Running(engine, pub):
        await until(lambda: engine.container_names() == ["web"])
    await assert_only_container(engine, "web", old_id)


async def test_recovery_after_crash_after_activation(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    parsed = parse_component(component("web", image="img:1"))
    old_id = engine.add_container(
        "web.cua-old", parsed.spec, encode_labels(parsed, DOMAIN), status=ContainerStatus.EXITED
    )
    new = parse_component(component("web", image="img:2"))
    engine.add_container(
        "web", new.spec, encode_labels(new, DOMAIN) | operation_labels("op", False)
    )
    done = await recover(engine)
    assert done == [
        "web: new container moved aside",
        "web: old container renamed back",
        "web: new container of an unfinished operation removed",
    ]
    await assert_only_container(engine, "web", old_id, ContainerStatus.EXITED)  # as before


async def test_recovery_finishes_a_removal_that_cleanup_committed_to(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """A RECREATE whose old container could not be removed at CLEANUP stays updated."""
    old_id = add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE"):
        await op.command(command, "")
    engine.fail_next("remove_container", EngineError("device or resource busy"))
    await op.command("CLEANUP", "")
    assert pub.statuses("A")[-1] == "COMPLETED"  # Kanto ignores RECREATE removal errors
    assert sorted(engine.container_names()) == ["web", "web.cua-removed"]
    new_id = (await engine.inspect_container("web")).id
    done = await recover(engine)
    assert done == ["web.cua-removed: removal committed by CLEANUP finished"]
    assert engine.container_names() == ["web"]
    details = await engine.inspect_container("web")
    assert (details.id, details.spec.image) == (new_id, "img:2")
    assert details.id != old_id


async def test_recovery_leaves_unmanaged_lookalikes(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.add_container("x.cua-new", parse_component(component("x-y", image="img:1")).spec)
    async with Running(engine, pub):
        await asyncio.sleep(0.05)
    assert engine.container_names() == ["x.cua-new"]


async def test_recovery_leaves_unmanaged_old_lookalike(engine: FakeEngine) -> None:
    engine.add_container("tool.cua-old", parse_component(component("tool", image="img:1")).spec)
    assert await recover(engine) == []
    assert engine.container_names() == ["tool.cua-old"]


async def test_recovery_removes_unactivated_new_container_and_restarts_stopped_old(
    engine: FakeEngine,
) -> None:
    old_id = add_managed(engine, "web", image="img:1", running=False)  # stopped by UPDATE
    _new_container(engine, "web", "img:2", replaces_running=True)
    await recover(engine)
    await assert_only_container(engine, "web", old_id)
