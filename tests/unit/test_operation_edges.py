"""Operation edge cases that `make mutation` found untested (spec §3.4; docs/testing.md).

Mutants of `cua.update.operation` left alive, by kind; none changes the feedback or what
the device ends with:
- `""` -> None as the baseline of standalone commands and of `refuse`: `null` is the zero
  value in our models (as Go decodes it), so the feedback is the same.
- `ensure_running=None` where False is meant (supersede, `_restore`, `_undo_quietly`, which
  only ever get False); False or None in ROLLBACK's D5 branch, which handles DESTROY and
  CHECK actions: the rule restarts only UPDATE and RECREATE ones, so it does not apply.
- Values never read: the first `last_message` of `_phase_loop` and `_rollback` (`last` is
  None until it is set), `failure = None`, `_stopping = None`, `_last_progress = 1.0` (the
  clock is far past it), the defaults of `feedback` (every caller passes both),
  `state.status = None` right before it is set again, `OperationStopped(None)` (the action
  gets MSG_STOPPING directly).
- `action.progress = None` after a progress message: read as 0, as above.
- `self._baselines.pop(baseline)` without a default: CLEANUP gets there only for a known
  baseline. `DESTROY or status is UPDATE_SUCCESS` in `_cleanup`: after ACTIVATION_SUCCESS
  only DESTROY actions are at UPDATE_SUCCESS.
- Lookahead (`parallel_actions - 1` as `+ 1` or `- 2`, `early=None`, `image_ready` always
  false): how much engine work runs ahead; the feedback is the same by design
  (test_lookahead checks one at a time against parallel).
- `_start_order`: `<=` for `<` between positions (the same position is the action itself,
  left out just before). `_activate`'s `max(2, parallel_actions)` slots: slots only matter
  when running ahead, which takes 2 parallel actions or more.
- The progress throttle of `_await_image` (`>` for `>=`, `percent > 1`, the wait time):
  timing, which tests do not assert (DEVELOPERS.md); the wait already spaces messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from cua.api.models import CommandType, DesiredStateFeedback
from cua.containers.state import ContainerStatus
from cua.engine.base import EngineError, PullProgress
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher, has_progress
from cua.update.journal import Journal, JournalError, journal_path
from cua.update.manager import UpdateManager
from cua.update.operation import Operation, stopped_message
from tests.builders import (
    HELLO,
    add_managed,
    component,
    desired,
    operation,
    settings,
    status_of,
    until,
)

pytestmark = pytest.mark.unit


async def test_every_answer_to_a_named_baseline_names_it(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    add_managed(engine, "svc", image="img:1")
    state = desired(
        component("web", image="img:2"),
        component("svc", image="img:1", memory="100M"),
        baselines={"b1": ["containers:web", "containers:svc"]},
    )
    op = await operation(engine, pub, state)
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE", "ROLLBACK", "CLEANUP"):
        await op.command(command, "b1")
    await op.command("CLEANUP", "containers:remove-components")  # the last baseline
    wire = pub.wire("A")
    named = [m for m in wire[1:-2] if m["status"] != "INCOMPLETE"]
    assert {m["status"] for m in named} >= {
        "DOWNLOADING", "DOWNLOAD_SUCCESS", "UPDATING", "UPDATE_SUCCESS", "ACTIVATING",
        "ACTIVATION_SUCCESS", "ROLLBACK", "ROLLBACK_SUCCESS", "CLEANUP_SUCCESS",
    }  # fmt: skip
    assert all(m["baseline"] == "b1" for m in named), [m["status"] for m in named]
    assert wire[-2]["baseline"] == "containers:remove-components"
    assert wire[-1]["status"] == "INCOMPLETE"
    assert "baseline" not in wire[-1]


async def test_standalone_feedback_names_no_baseline(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    engine.fail_start("img:2", "boom")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    assert await op.run_standalone() == "INCOMPLETE"
    statuses = pub.statuses("A")
    assert "ROLLBACK_SUCCESS" in statuses
    assert all("baseline" not in m for m in pub.wire("A"))


async def test_rollback_starts_the_old_container_even_if_it_was_stopped(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    # Kanto: after ROLLBACK the old container of an UPDATE or RECREATE runs.
    add_managed(engine, "web", image="img:1", running=False)
    add_managed(engine, "svc", image="img:1", running=False)
    state = desired(component("web", image="img:2"), component("svc", image="img:1", memory="9M"))
    op = await operation(engine, pub, state)
    for command in ("DOWNLOAD", "UPDATE", "ROLLBACK"):
        await op.command(command, "")
    assert pub.statuses("A")[-1] == "ROLLBACK_SUCCESS"
    assert status_of(engine, "web") is ContainerStatus.RUNNING
    assert status_of(engine, "svc") is ContainerStatus.RUNNING


@pytest.mark.parametrize("end", ["CLEANUP", "supersede"])
async def test_restoring_after_a_failure_does_not_start_a_stopped_container(
    engine: FakeEngine, pub: RecordingPublisher, end: str
) -> None:
    # D3 (CLEANUP after a failure) and D9 (supersede): the device is put back as it was.
    add_managed(engine, "web", image="img:1", running=False)
    before = status_of(engine, "web")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    if end == "CLEANUP":
        await op.command("CLEANUP", "")
        assert pub.statuses("A")[-2:] == ["CLEANUP_SUCCESS", "INCOMPLETE"]
    else:
        await op.supersede("replaced")
        assert op.final_status == "SUPERSEDED"
    assert op.finished
    assert engine.container_names() == ["web"]
    assert status_of(engine, "web") is before is not ContainerStatus.RUNNING


REMOVAL_FAILURES = {
    # D3: a failed restore makes the CLEANUP a failure.
    "restore": (("DOWNLOAD", "CLEANUP"), "CLEANUP_FAILURE", "[A] cannot restore web: busy"),
    "rollback": (("DOWNLOAD", "UPDATE", "ROLLBACK"), "ROLLBACK_FAILURE",
                 "[A] rollback of web: busy"),
    # The old container of a RECREATE that cannot be removed is left (logged only).
    "cleanup": (("DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP"), "CLEANUP_SUCCESS",
                "[A] cleanup of web: busy"),
}  # fmt: skip


@pytest.mark.parametrize("case", REMOVAL_FAILURES)
async def test_a_removal_failure_is_answered_and_logged(
    engine: FakeEngine, pub: RecordingPublisher, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    commands, answer, logged = REMOVAL_FAILURES[case]
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    for earlier in commands[:-1]:
        await op.command(earlier, "")
    engine.fail_next("remove_container", EngineError("busy"))
    seen = len(pub.statuses("A"))
    with caplog.at_level(logging.WARNING, logger="cua.update.operation"):
        await op.command(commands[-1], "")
    assert answer in pub.statuses("A")[seen:]
    assert caplog.messages == [logged]


async def test_failures_are_logged_with_the_activity_and_the_container(
    engine: FakeEngine, pub: RecordingPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await op.command("DOWNLOAD", "")
    with caplog.at_level(logging.WARNING, logger="cua.update.operation"):
        engine.fail_next("stop_container", EngineError("stuck"))
        await op.command("UPDATE", "")
        await op.command("FLY", "")
        await op.command("CLEANUP", "")
        await op.command("CLEANUP", "")
        await op.refuse(CommandType.UPDATE, "bad")
    assert caplog.messages == [
        "[A] UPDATING of web failed: stuck",
        "[A] unknown command 'FLY' ignored",
        "[A] command CLEANUP after the end: ignored",
        "[A] invalid UPDATE after the end: ignored",
    ]


async def test_refuse_and_reject_answer_without_a_baseline_name(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await op.refuse(CommandType.DOWNLOAD, "invalid command: baseline: must be a string")
    await op.reject("CLEANUP", "b")
    assert pub.wire("A")[-2]["message"] == "invalid command: baseline: must be a string"
    assert "baseline" not in pub.wire("A")[-2]
    assert pub.wire("A")[-1]["message"] == (
        "CLEANUP is not possible while the operation runs (standalone mode)"
    )


async def test_download_pulls_only_what_creates_need(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    # The CHECK container's image is neither local nor needed: it is not pulled.
    add_managed(engine, "chk", image="img:1")
    engine.remove_image("img:1")
    state = desired(component("chk", image="img:1"), component("new", image=HELLO))
    op = await operation(engine, pub, state)
    await op.command("DOWNLOAD", "")
    assert pub.statuses("A")[-1] == "DOWNLOAD_SUCCESS"
    assert engine.call_count("pull_image") == 1


async def test_pull_always_pulls_a_local_image(engine: FakeEngine, pub: RecordingPublisher) -> None:
    engine.add_image(HELLO)
    op = await operation(engine, pub, desired(component("new", image=HELLO)), pull_always=True)
    await op.command("DOWNLOAD", "")
    assert engine.call_count("pull_image") == 1


async def test_identified_joins_the_warnings(engine: FakeEngine, pub: RecordingPublisher) -> None:
    state = desired(component("web", image="img:2", port=["x", "y"]))
    op = await operation(engine, pub, state)
    assert len(op.plan.warnings) == 2
    assert pub.wire("A")[0]["message"] == "; ".join(op.plan.warnings)


class HeldPull(FakeEngine):
    """A pull that reports 50 % and then waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    def pull_image(self, image: str) -> AsyncIterator[PullProgress]:
        return self._held(image)

    async def _held(self, image: str) -> AsyncIterator[PullProgress]:
        yield PullProgress(image, 50, 100)
        await self.release.wait()
        async for item in super().pull_image(image):
            yield item


class ReleasingPublisher(RecordingPublisher):
    """Lets the held pull finish once a progress message is out."""

    def __init__(self, engine: HeldPull) -> None:
        super().__init__()
        self.engine = engine

    async def publish_feedback(self, activity_id: str, feedback: DesiredStateFeedback) -> None:
        await super().publish_feedback(activity_id, feedback)
        if any(action.progress for action in feedback.actions):
            self.engine.release.set()


async def test_progress_messages_name_the_baseline() -> None:
    engine = HeldPull()
    engine.add_registry_image("img:2")
    pub = ReleasingPublisher(engine)
    state = desired(component("web", image="img:2"), baselines={"b1": ["containers:web"]})
    op = await operation(engine, pub, state)
    await op.command("DOWNLOAD", "b1")
    progress = [m for m in pub.wire("A") if has_progress(m)]
    assert progress
    assert all(m["baseline"] == "b1" for m in progress)
    assert pub.statuses("A")[-1] == "DOWNLOAD_SUCCESS"


async def test_a_failure_names_the_baseline(engine: FakeEngine, pub: RecordingPublisher) -> None:
    add_managed(engine, "web", image="img:1")
    state = desired(component("web", image="img:2"), baselines={"b1": ["containers:web"]})
    op = await operation(engine, pub, state)
    await op.command("DOWNLOAD", "b1")
    engine.fail_next("stop_container", EngineError("stuck"))
    await op.command("UPDATE", "b1")
    assert pub.wire("A")[-1]["status"] == "UPDATE_FAILURE"
    assert pub.wire("A")[-1]["baseline"] == "b1"


async def test_a_stop_ends_the_phase_with_its_failure_then_incomplete(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    state = desired(component("web", image="img:2"), baselines={"b1": ["containers:web"]})
    op = await operation(engine, pub, state)
    op.request_stop()
    await op.command("DOWNLOAD", "b1")
    wire = pub.wire("A")
    assert [(m["status"], m.get("baseline")) for m in wire[1:]] == [
        ("DOWNLOADING", "b1"),
        ("DOWNLOAD_FAILURE", "b1"),
        ("INCOMPLETE", None),
    ]
    assert (
        wire[-2]["actions"][0]["message"] == "the agent is stopping: the operation was interrupted"
    )
    assert op.final_status == "INCOMPLETE"
    assert op.finished


NO_SPACE = "cannot write the journal /state/journal: No space left on device"


class FailingJournal(Journal):
    """Commits and ends cannot be written (a full disk)."""

    def committed(self, activity: str, containers: Iterable[tuple[str, str, bool]]) -> None:
        raise JournalError(NO_SPACE)

    def ended(self, activity: str) -> None:
        raise JournalError(NO_SPACE)


async def test_a_journal_that_cannot_commit_is_logged_and_the_cleanup_goes_on(
    engine: FakeEngine, pub: RecordingPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    add_managed(engine, "web", image="img:1")
    the_settings = settings()
    plan = await UpdateManager(engine, pub, the_settings).plan(
        desired(component("web", image="img:2"))
    )
    op = Operation("A", plan, engine, pub, the_settings, journal=FailingJournal(None))
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE"):
        await op.command(command, "")
    with caplog.at_level(logging.WARNING, logger="cua.update.operation"):
        await op.command("CLEANUP", "")
    assert pub.statuses("A")[-2:] == ["CLEANUP_SUCCESS", "COMPLETED"]
    assert engine.container_names() == ["web"]
    assert caplog.messages == [f"[A] {NO_SPACE}"]


async def test_a_journal_that_cannot_record_a_stop_is_logged(
    engine: FakeEngine, pub: RecordingPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    the_settings = settings()
    plan = await UpdateManager(engine, pub, the_settings).plan(
        desired(component("web", image=HELLO))
    )
    op = Operation("A", plan, engine, pub, the_settings, journal=FailingJournal(None))
    op.request_stop()
    with caplog.at_level(logging.WARNING, logger="cua.update.operation"):
        await op.command("DOWNLOAD", "")
    assert pub.statuses("A")[-1] == "INCOMPLETE"
    assert caplog.messages == [f"[A] {NO_SPACE}"]


async def test_the_old_container_is_stopped_with_the_grace_period(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    old = add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")), stop_grace_period=7)
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    assert [c.args for c in engine.calls if c.method == "stop_container"] == [(old, 7)]


@pytest.mark.parametrize(
    ("reasons", "message"),
    [
        ((None,), None),
        (("",), None),
        (("SIGTERM", "SIGINT"), stopped_message("SIGTERM")),  # the first reason is said
    ],
)
async def test_a_stop_says_its_reason_in_the_incomplete_message_if_it_has_one(
    engine: FakeEngine,
    pub: RecordingPublisher,
    reasons: tuple[str | None, ...],
    message: str | None,
) -> None:
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    for reason in reasons:
        if reason is None:
            op.request_stop()  # the default: no reason
        else:
            op.request_stop(reason)
    await op.command("DOWNLOAD", "")
    assert pub.wire("A")[-1]["status"] == "INCOMPLETE"
    assert pub.wire("A")[-1].get("message") == message


async def test_undo_after_a_stop_puts_back_each_changed_container_running(
    engine: FakeEngine, pub: RecordingPublisher, tmp_path: Path
) -> None:
    """As ROLLBACK: the old container ends running even if it was not (Kanto); a container
    that cannot be put back is named; the operation's journal records go."""
    add_managed(engine, "aaa", image="img:1")  # CHECK: nothing to undo
    add_managed(engine, "web", image="img:1", running=False)
    add_managed(engine, "zzz", image="img:1")
    state = desired(
        component("aaa", image="img:1"),
        component("web", image="img:2"),
        component("zzz", image="img:2"),
    )
    op = await operation(engine, pub, state, state_dir=tmp_path)
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    engine.fail_start("zzz", "exec: no such file or directory")
    assert await op.undo_changes() == (["web"], ["zzz"])
    assert sorted(engine.container_names()) == ["aaa", "web", "zzz"]
    assert status_of(engine, "web") is ContainerStatus.RUNNING
    assert not journal_path(tmp_path, "containers").exists()


async def test_a_stop_ends_the_wait_for_a_started_container_to_become_healthy(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """ACTIVATE starts a stopped container (CHECK) and waits for its healthcheck: an agent
    stop ends that wait (the watch would otherwise last up to activation_timeout)."""
    add_managed(engine, "web", image="img:1", running=False)
    engine.behave_after_start("web", health="starting")  # never healthy
    state = desired(component("web", image="img:1"))
    op = await operation(engine, pub, state, activation_timeout=3600.0)
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    inspected = engine.call_count("inspect_container")
    activate = asyncio.create_task(op.command("ACTIVATE", ""))
    await until(lambda: status_of(engine, "web") is ContainerStatus.RUNNING)
    await until(lambda: engine.call_count("inspect_container") > inspected)  # watching
    op.request_stop("SIGTERM")
    async with asyncio.timeout(5.0):
        await activate
    assert pub.statuses("A")[-2:] == ["ACTIVATION_FAILURE", "INCOMPLETE"]


async def test_an_extra_host_left_out_is_logged_with_the_container(
    engine: FakeEngine, pub: RecordingPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    state = desired(component("app", image="img:1", host="databroker:container_databroker-host"))
    with caplog.at_level(logging.WARNING, logger="cua.update.operation"):
        assert await UpdateManager(engine, pub, settings()).apply("A", state) == "COMPLETED"
    assert caplog.messages == [
        "container app: extra host databroker left out: "
        "no running container has hostname databroker-host"
    ]


@pytest.mark.parametrize("parallel", [2, 4])
async def test_run_ahead_a_dependant_listed_first_starts_after_its_extra_hosts_target(
    engine: FakeEngine, pub: RecordingPublisher, parallel: int
) -> None:
    """Run ahead (parallel actions), a container whose extra host names another new
    container's hostname waits for that one to start, and so gets its address; a chain of
    such dependants starts in its order."""
    state = desired(
        component("app", image="img:1", host="databroker:container_databroker-host"),
        component("logger", image="img:1", host="app:container_app-host"),
        component("databroker", image="img:1"),
    )
    manager = UpdateManager(engine, pub, settings(parallel_actions=parallel))
    assert await manager.apply("A", state) == "COMPLETED"
    broker = (await engine.inspect_container("databroker")).address
    assert (await engine.inspect_container("app")).spec.extra_hosts == (f"databroker:{broker}",)
    app = (await engine.inspect_container("app")).address
    assert (await engine.inspect_container("logger")).spec.extra_hosts == (f"app:{app}",)


class FinalStatusFailingJournal(Journal):
    """The final status cannot be written (a full disk at the end)."""

    def finished(
        self, activity: str, status: str, message: str = "", *, interrupted: bool = False
    ) -> None:
        raise JournalError(NO_SPACE)


async def test_a_journal_that_cannot_record_the_final_status_is_logged_and_it_is_published(
    engine: FakeEngine, pub: RecordingPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    the_settings = settings()
    plan = await UpdateManager(engine, pub, the_settings).plan(desired())
    journal = FinalStatusFailingJournal(None)
    op = Operation("A", plan, engine, pub, the_settings, journal=journal)
    with caplog.at_level(logging.WARNING, logger="cua.update.operation"):
        for command in ("DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP"):
            await op.command(command, "")
    assert pub.statuses("A")[-1] == "COMPLETED"
    assert caplog.messages == [f"[A] {NO_SPACE}"]


async def test_one_at_a_time_a_dependant_listed_before_its_target_is_left_out(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """As Kanto, which starts the containers in their order: the target has no address yet
    when the dependant starts (the warning says so)."""
    state = desired(
        component("app", image="img:1", host="databroker:container_databroker-host"),
        component("databroker", image="img:1"),
    )
    manager = UpdateManager(engine, pub, settings(parallel_actions=1))
    async with asyncio.timeout(5.0):  # it does not wait for a target that starts after it
        assert await manager.apply("A", state) == "COMPLETED"
    assert (await engine.inspect_container("app")).spec.extra_hosts == ()


async def test_run_ahead_containers_naming_each_other_or_themselves_do_not_wait_in_a_cycle(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """The later of two containers that name each other waits for the earlier one, which
    does not wait; one naming its own hostname does not wait for itself."""
    state = desired(
        component("one", image="img:1", host="two:container_two-host"),
        component("two", image="img:1", host="one:container_one-host"),
        component("me", image="img:1", host="me:container_me-host"),
    )
    manager = UpdateManager(engine, pub, settings(parallel_actions=4))
    async with asyncio.timeout(5.0):
        assert await manager.apply("A", state) == "COMPLETED"
    one = (await engine.inspect_container("one")).address
    assert (await engine.inspect_container("two")).spec.extra_hosts == (f"one:{one}",)


DB_HOST = "databroker:container_databroker-host"


async def _replaced_dependant(
    engine: FakeEngine, pub: RecordingPublisher, **overrides: float
) -> Operation:
    """`app` names `databroker` by hostname; a new `databroker` makes ACTIVATE replace the
    unchanged `app` (a CHECK) with the new address."""
    first = desired(
        component("databroker", image="img:1"), component("app", image=HELLO, host=DB_HOST)
    )
    assert await UpdateManager(engine, pub, settings()).apply("first", first) == "COMPLETED"
    second = desired(
        component("databroker", image="img:2"), component("app", image=HELLO, host=DB_HOST)
    )
    op = await operation(engine, pub, second, **overrides)
    for command in ("DOWNLOAD", "UPDATE"):
        await op.command(command, "")
    return op


async def test_a_replaced_dependant_that_fails_to_run_is_named(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    op = await _replaced_dependant(engine, pub)
    engine.behave_after_start(HELLO, exit_code=3)
    await op.command("ACTIVATE", "")
    failed = [a for a in pub.wire("A")[-1]["actions"] if a["status"] == "ACTIVATION_FAILURE"]
    assert [a["message"].split(" exited")[0] for a in failed] == ["container app"]


@pytest.mark.parametrize("replaced", [False, True])
async def test_a_stop_ends_the_wait_for_a_new_container_to_become_healthy(
    engine: FakeEngine, pub: RecordingPublisher, replaced: bool
) -> None:
    """A new container (CREATE), or a dependant replaced for its extra hosts, never healthy:
    an agent stop ends the wait."""
    if replaced:
        op = await _replaced_dependant(engine, pub, activation_timeout=3600.0)
    else:
        state = desired(component("app", image=HELLO))
        op = await operation(engine, pub, state, activation_timeout=3600.0)
        for command in ("DOWNLOAD", "UPDATE"):
            await op.command(command, "")
    engine.behave_after_start(HELLO, health="starting")
    inspected = engine.call_count("inspect_container")
    activate = asyncio.create_task(op.command("ACTIVATE", ""))
    await until(lambda: engine.call_count("inspect_container") > inspected)  # watching
    op.request_stop("SIGTERM")
    async with asyncio.timeout(5.0):
        await activate
    assert pub.statuses("A")[-1] == "INCOMPLETE"
