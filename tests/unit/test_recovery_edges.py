"""Crash recovery edge cases that `make mutation` found untested (docs/testing.md).

Each test pins what recovery does, or logs, in one state a crash can leave.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cua.containers.labels import encode_labels
from cua.containers.parse import parse_component
from cua.containers.state import ContainerStatus
from cua.engine.base import EngineError
from cua.testing.fake_engine import EngineCall, FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.journal import Journal, journal_for, journal_path
from cua.update.names import operation_labels
from cua.update.recovery import recover
from tests.builders import DOMAIN, add_managed, component, desired, operation, status_of

pytestmark = pytest.mark.unit


def _ours(
    engine: FakeEngine,
    name: str,
    labels: dict[str, str] | None = None,
    *,
    running: bool = True,
    status: ContainerStatus | None = None,
) -> str:
    """A container named `name` with this domain's labels (plus `labels`)."""
    parsed = parse_component(component(name.split(".", maxsplit=1)[0], image="img:1"))
    all_labels = encode_labels(parsed, DOMAIN) | (labels or {})
    return engine.add_container(name, parsed.spec, all_labels, running=running, status=status)


async def test_a_journal_record_of_a_container_gone_since_is_logged_by_name_and_step(
    engine: FakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = journal_path(tmp_path, DOMAIN)
    Journal(path).stopped("A", "no-such-id", "vanished")
    with caplog.at_level(logging.INFO, logger="cua.update.recovery"):
        assert await recover(engine, Journal(path)) == []
    assert "recovery: vanished (stopped record): the container is gone" in caplog.messages


async def test_a_journal_record_that_cannot_be_undone_is_logged_by_name_and_step(
    engine: FakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone_id = add_managed(engine, "gone", image="img:1", running=False)
    engine.fail_start("gone", "exec: no such file or directory")
    path = journal_path(tmp_path, DOMAIN)
    Journal(path).stopped("A", gone_id, "gone")
    with caplog.at_level(logging.ERROR, logger="cua.update.recovery"):
        assert await recover(engine, Journal(path)) == []
    assert (
        "recovery: gone (stopped record): cannot start container gone: "
        "exec: no such file or directory"
    ) in caplog.messages


async def test_a_stopped_container_renamed_since_is_logged_with_both_names(
    engine: FakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other_id = add_managed(engine, "other", image="img:1", running=False)
    path = journal_path(tmp_path, DOMAIN)
    Journal(path).stopped("A", other_id, "gone")
    with caplog.at_level(logging.WARNING, logger="cua.update.recovery"):
        assert await recover(engine, Journal(path)) == []
    assert (
        "recovery: gone was stopped by the operation but is now named other; left alone"
    ) in caplog.messages


@pytest.mark.parametrize("status", [ContainerStatus.RUNNING, ContainerStatus.PAUSED])
async def test_a_stopped_record_of_a_container_that_looks_running_stops_it_with_the_grace_period(
    engine: FakeEngine, tmp_path: Path, status: ContainerStatus
) -> None:
    """The dead agent's stop may still be in flight: stopped again (waiting up to the
    agent's grace period), then started."""
    web_id = add_managed(engine, "web", image="img:1")
    engine._containers[web_id].status = status
    path = journal_path(tmp_path, DOMAIN)
    Journal(path).stopped("A", web_id, "web")
    done = await recover(engine, Journal(path), grace_period=7.5)
    assert done == ["web: container the operation was stopping stopped and started again"]
    assert EngineCall("stop_container", (web_id, 7.5)) in engine.calls
    assert status_of(engine, "web") is ContainerStatus.RUNNING


async def test_an_old_container_left_alone_under_its_transient_name_is_renamed_back(
    engine: FakeEngine,
) -> None:
    """Crash after ACTIVATE renamed the old one aside and the new one was removed."""
    old_id = _ours(engine, "web.cua-old", status=ContainerStatus.EXITED)
    assert await recover(engine) == ["web: old container renamed back"]
    assert engine.container_names() == ["web"]
    assert (await engine.inspect_container("web")).id == old_id
    assert status_of(engine, "web") is ContainerStatus.EXITED  # no record that it ran


async def test_a_real_and_an_old_container_without_a_record_are_left_alone_and_logged(
    engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    _ours(engine, "web")
    _ours(engine, "web.cua-old", running=False)
    with caplog.at_level(logging.WARNING, logger="cua.update.recovery"):
        assert await recover(engine) == []
    assert "recovery: web and web.cua-old both exist; left alone" in caplog.messages
    assert sorted(engine.container_names()) == ["web", "web.cua-old"]


@pytest.mark.parametrize("old_running", [True, False])
async def test_an_old_container_still_running_is_not_started_again(
    engine: FakeEngine, old_running: bool
) -> None:
    """Crash after the new container was created, before the old one was stopped."""
    add_managed(engine, "web", image="img:1", running=old_running)
    _ours(engine, "web.cua-new", operation_labels("old-op", True), running=False)
    done = await recover(engine)
    removed = "web: new container of an unfinished operation removed"
    started = [] if old_running else ["web: old container started again"]
    assert done == [removed, *started]
    assert engine.call_count("start_container") == len(started)
    assert status_of(engine, "web") is ContainerStatus.RUNNING


async def test_an_old_container_started_by_names_is_not_started_again_for_its_record(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    """The journal's STOPPED record of a container recovery already started from the
    names and labels adds nothing (no second stop and start)."""
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")), state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    assert sorted(engine.container_names()) == ["web", "web.cua-new"]
    before = len(engine.calls)
    done = await recover(engine, journal_for(tmp_path, DOMAIN))
    assert done == [
        "web: new container of an unfinished operation removed",
        "web: old container started again",
    ]
    assert [c.method for c in engine.calls[before:]].count("stop_container") == 0
    assert status_of(engine, "web") is ContainerStatus.RUNNING


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _finished(activity: str, status: str, message: str, interrupted: bool) -> dict[str, object]:
    return {
        "v": 1,
        "activity": activity,
        "step": "finished",
        "id": "",
        "name": "",
        "status": status,
        "message": message,
        "interrupted": interrupted,
    }


async def test_recovery_leaves_every_owed_final_status_and_says_what_it_did(
    engine: FakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two finished activities not acknowledged yet, and an interrupted one: each owes its
    final status; the interrupted one's INCOMPLETE says every step of the recovery."""
    gone_id = add_managed(engine, "gone", image="img:1", running=False)
    run_id = add_managed(engine, "run", image="img:1")  # its stop may be in flight
    path = journal_path(tmp_path, DOMAIN)
    journal = Journal(path)
    journal.finished("A", "COMPLETED")
    journal.finished("B", "INCOMPLETE", "stopped by SIGTERM: the operation was interrupted")
    journal.stopped("C", gone_id, "gone")
    journal.stopped("C", run_id, "run")
    with caplog.at_level(logging.WARNING, logger="cua.update.recovery"):
        done = await recover(engine, journal)  # the default grace period: the agent's
    assert done == [
        "run: container the operation was stopping stopped and started again",
        "gone: container stopped by the operation started again",
    ]
    assert EngineCall("stop_container", (run_id, 30.0)) in engine.calls
    assert caplog.messages == [
        "recovery: 2 journal record(s) of an interrupted operation",
        f"recovery: {done[0]}",
        f"recovery: {done[1]}",
    ]
    assert _records(path) == [
        _finished("A", "COMPLETED", "", False),
        _finished("B", "INCOMPLETE", "stopped by SIGTERM: the operation was interrupted", False),
        _finished(
            "C",
            "INCOMPLETE",
            f"the agent restarted during this operation; recovery did: {done[0]}; {done[1]}",
            True,
        ),
    ]


@pytest.mark.parametrize(
    ("names", "logged"),
    [(("web.cua-removed",), "web.cua-removed"), (("web", "web.cua-new"), "web")],
)
async def test_a_container_recovery_cannot_change_is_logged_by_its_name(
    engine: FakeEngine, caplog: pytest.LogCaptureFixture, names: tuple[str, ...], logged: str
) -> None:
    for name in names:
        _ours(engine, name, operation_labels("old-op", True), running=False)
    engine.fail_next("remove_container", EngineError("device or resource busy"))
    with caplog.at_level(logging.ERROR, logger="cua.update.recovery"):
        await recover(engine)
    assert caplog.messages == [f"recovery: {logged}: device or resource busy"]
