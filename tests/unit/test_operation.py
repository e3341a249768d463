"""The phases and their exact feedback (spec §3.4, §4.3, §4.4) and our fixes D3-D6, D14.

Every test drives an identified operation with commands, as an update manager would, on
the fake engine, and compares the feedback payload by payload (`to_wire()` dicts).
"""

from __future__ import annotations

import pytest

from cua.api.models import CommandType
from cua.containers.spec import RestartPolicy, RestartPolicyType
from cua.containers.state import ContainerStatus
from cua.engine.base import EngineError, StartFailedError
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.operation import COMMANDS
from tests.builders import (
    HELLO,
    M_CHECK,
    M_CREATE,
    M_CREATED,
    M_DESTROY,
    M_RB_CREATE,
    M_RB_RECREATE,
    M_RB_UPDATE,
    M_RECREATE,
    M_REMOVED,
    M_RUNNING,
    M_STARTED,
    M_STOPPED,
    M_UPDATE,
    M_UPDATED,
    act,
    add_managed,
    assert_only_container,
    component,
    desired,
    fb,
    memory_limits,
    operation,
    status_of,
)

pytestmark = pytest.mark.unit


async def run(op, *commands: str, baseline: str = "") -> None:  # type: ignore[no-untyped-def]
    for command in commands:
        await op.command(command, baseline)


# --- §4.4, verbatim ---------------------------------------------------------------------------


async def test_spec_4_4_single_container_install(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    state = desired(component("hello-world", "latest", image=HELLO))
    op = await operation(engine, pub, state)
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP")

    def h(status: str, message: str) -> dict[str, object]:
        return act("hello-world", status, message, "latest")

    assert pub.wire("A") == [
        fb("IDENTIFIED", h("IDENTIFIED", M_CREATE)),
        fb("DOWNLOADING", h("DOWNLOADING", M_CREATE)),
        fb("DOWNLOAD_SUCCESS", h("DOWNLOAD_SUCCESS", M_CREATED)),
        fb("UPDATE_SUCCESS", h("DOWNLOAD_SUCCESS", M_CREATED)),
        fb("ACTIVATING", h("ACTIVATING", M_CREATED)),
        fb("ACTIVATION_SUCCESS", h("ACTIVATION_SUCCESS", M_STARTED)),
        fb("CLEANUP_SUCCESS", h("ACTIVATION_SUCCESS", M_STARTED)),
        fb("COMPLETED", h("ACTIVATION_SUCCESS", M_STARTED)),
    ]
    assert status_of(engine, "hello-world") is ContainerStatus.RUNNING
    assert engine.container_names() == ["hello-world"]


# --- all five kinds, the whole cycle ----------------------------------------------------------


async def test_all_kinds_full_cycle_exact_feedback(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    add_managed(engine, "svc", image="img:1", restartPolicy="no")
    add_managed(engine, "chk", image="img:1", running=False)
    add_managed(engine, "old", image="img:1")
    state = desired(
        component("new-x", image="img:2"),
        component("web", image="img:2"),
        component("svc", image="img:1"),
        component("chk", image="img:1"),
    )
    op = await operation(engine, pub, state)
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP")
    n, w, s, c, o = "new-x", "web", "svc", "chk", "old"
    d = lambda st, m: act(o, st, m, "1")  # noqa: E731
    assert pub.wire() == [
        fb(
            "IDENTIFIED",
            act(n, "IDENTIFIED", M_CREATE),
            act(w, "IDENTIFIED", M_RECREATE),
            act(s, "IDENTIFIED", M_UPDATE),
            act(c, "IDENTIFIED", M_CHECK),
            d("IDENTIFIED", M_DESTROY),
        ),
        # DOWNLOAD: CREATE, RECREATE
        fb(
            "DOWNLOADING",
            act(n, "DOWNLOADING", M_CREATE),
            act(w, "IDENTIFIED", M_RECREATE),
            act(s, "IDENTIFIED", M_UPDATE),
            act(c, "IDENTIFIED", M_CHECK),
            d("IDENTIFIED", M_DESTROY),
        ),
        fb(
            "DOWNLOADING",
            act(n, "DOWNLOAD_SUCCESS", M_CREATED),
            act(w, "DOWNLOADING", M_RECREATE),
            act(s, "IDENTIFIED", M_UPDATE),
            act(c, "IDENTIFIED", M_CHECK),
            d("IDENTIFIED", M_DESTROY),
        ),
        fb(
            "DOWNLOAD_SUCCESS",
            act(n, "DOWNLOAD_SUCCESS", M_CREATED),
            act(w, "DOWNLOAD_SUCCESS", M_CREATED),
            act(s, "IDENTIFIED", M_UPDATE),
            act(c, "IDENTIFIED", M_CHECK),
            d("IDENTIFIED", M_DESTROY),
        ),
        # UPDATE: RECREATE, UPDATE, DESTROY
        fb(
            "UPDATING",
            act(n, "DOWNLOAD_SUCCESS", M_CREATED),
            act(w, "UPDATING", M_CREATED),
            act(s, "IDENTIFIED", M_UPDATE),
            act(c, "IDENTIFIED", M_CHECK),
            d("IDENTIFIED", M_DESTROY),
        ),
        fb(
            "UPDATING",
            act(n, "DOWNLOAD_SUCCESS", M_CREATED),
            act(w, "UPDATE_SUCCESS", M_STOPPED),
            act(s, "UPDATING", M_UPDATE),
            act(c, "IDENTIFIED", M_CHECK),
            d("IDENTIFIED", M_DESTROY),
        ),
        fb(
            "UPDATING",
            act(n, "DOWNLOAD_SUCCESS", M_CREATED),
            act(w, "UPDATE_SUCCESS", M_STOPPED),
            act(s, "UPDATE_SUCCESS", M_UPDATED),
            act(c, "IDENTIFIED", M_CHECK),
            d("UPDATING", M_DESTROY),
        ),
        fb(
            "UPDATE_SUCCESS",
            act(n, "DOWNLOAD_SUCCESS", M_CREATED),
            act(w, "UPDATE_SUCCESS", M_STOPPED),
            act(s, "UPDATE_SUCCESS", M_UPDATED),
            act(c, "IDENTIFIED", M_CHECK),
            d("UPDATE_SUCCESS", M_STOPPED),
        ),
        # ACTIVATE: all but DESTROY
        fb(
            "ACTIVATING",
            act(n, "ACTIVATING", M_CREATED),
            act(w, "UPDATE_SUCCESS", M_STOPPED),
            act(s, "UPDATE_SUCCESS", M_UPDATED),
            act(c, "IDENTIFIED", M_CHECK),
            d("UPDATE_SUCCESS", M_STOPPED),
        ),
        fb(
            "ACTIVATING",
            act(n, "ACTIVATION_SUCCESS", M_STARTED),
            act(w, "ACTIVATING", M_STOPPED),
            act(s, "UPDATE_SUCCESS", M_UPDATED),
            act(c, "IDENTIFIED", M_CHECK),
            d("UPDATE_SUCCESS", M_STOPPED),
        ),
        fb(
            "ACTIVATING",
            act(n, "ACTIVATION_SUCCESS", M_STARTED),
            act(w, "ACTIVATION_SUCCESS", M_STARTED),
            act(s, "ACTIVATING", M_UPDATED),
            act(c, "IDENTIFIED", M_CHECK),
            d("UPDATE_SUCCESS", M_STOPPED),
        ),
        fb(
            "ACTIVATING",
            act(n, "ACTIVATION_SUCCESS", M_STARTED),
            act(w, "ACTIVATION_SUCCESS", M_STARTED),
            act(s, "ACTIVATION_SUCCESS", M_UPDATED),
            act(c, "ACTIVATING", M_CHECK),
            d("UPDATE_SUCCESS", M_STOPPED),
        ),
        fb(
            "ACTIVATION_SUCCESS",
            act(n, "ACTIVATION_SUCCESS", M_STARTED),
            act(w, "ACTIVATION_SUCCESS", M_STARTED),
            act(s, "ACTIVATION_SUCCESS", M_UPDATED),
            act(c, "ACTIVATION_SUCCESS", M_RUNNING),
            d("UPDATE_SUCCESS", M_STOPPED),
        ),
        fb(
            "CLEANUP_SUCCESS",
            act(n, "ACTIVATION_SUCCESS", M_STARTED),
            act(w, "ACTIVATION_SUCCESS", M_STARTED),
            act(s, "ACTIVATION_SUCCESS", M_UPDATED),
            act(c, "ACTIVATION_SUCCESS", M_RUNNING),
            d("REMOVAL_SUCCESS", M_REMOVED),
        ),
        fb(
            "COMPLETED",
            act(n, "ACTIVATION_SUCCESS", M_STARTED),
            act(w, "ACTIVATION_SUCCESS", M_STARTED),
            act(s, "ACTIVATION_SUCCESS", M_UPDATED),
            act(c, "ACTIVATION_SUCCESS", M_RUNNING),
            d("REMOVAL_SUCCESS", M_REMOVED),
        ),
    ]
    assert sorted(engine.container_names()) == ["chk", "new-x", "svc", "web"]
    for name in ("chk", "new-x", "svc", "web"):
        assert status_of(engine, name) is ContainerStatus.RUNNING
    details = await engine.inspect_container("web")
    assert details.spec.image == "img:2"
    assert (await engine.inspect_container("svc")).spec.restart.type is (
        RestartPolicyType.UNLESS_STOPPED
    )


# --- phases with no relevant action ----------------------------------------------------------


async def test_phases_with_zero_relevant_actions_publish_only_the_result(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "chk", image="img:1")
    op = await operation(engine, pub, desired(component("chk", image="img:1")))
    await run(op, "DOWNLOAD", "UPDATE")
    a = act("chk", "IDENTIFIED", M_CHECK)
    assert pub.wire()[1:] == [fb("DOWNLOAD_SUCCESS", a), fb("UPDATE_SUCCESS", a)]


async def test_only_destroy_skips_activation_work(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "old", image="img:1")
    op = await operation(engine, pub, desired())
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP")
    assert pub.statuses() == [
        "IDENTIFIED",
        "DOWNLOAD_SUCCESS",
        "UPDATING",
        "UPDATE_SUCCESS",
        "ACTIVATION_SUCCESS",
        "CLEANUP_SUCCESS",
        "COMPLETED",
    ]
    assert engine.container_names() == []


# --- wrong order, unknown baseline, unknown command ----------------------------------------


@pytest.mark.parametrize(
    ("command", "failure", "message"),
    [
        (
            "UPDATE",
            "UPDATE_FAILURE",
            "UPDATE is possible only after status DOWNLOAD_SUCCESS is reported",
        ),
        (
            "ACTIVATE",
            "ACTIVATION_FAILURE",
            "ACTIVATE is possible only after status UPDATE_SUCCESS is reported",
        ),
        (
            "ROLLBACK",
            "ROLLBACK_FAILURE",
            "ROLLBACK is possible only after status "
            "DOWNLOAD_SUCCESS|UPDATE_SUCCESS|ACTIVATION_FAILURE|ACTIVATION_SUCCESS is reported",
        ),
    ],
)
async def test_wrong_state_answers_and_changes_nothing(
    engine: FakeEngine, pub: RecordingPublisher, command: str, failure: str, message: str
) -> None:
    op = await operation(engine, pub, desired(component("web-x", image="img:1")))
    await op.command(command, "*")
    assert pub.wire()[-1] == fb(
        failure, act("web-x", "IDENTIFIED", M_CREATE), baseline="*", message=message
    )
    assert engine.container_names() == []
    await op.command("DOWNLOAD", "")  # the state did not change
    assert pub.statuses()[-1] == "DOWNLOAD_SUCCESS"


def test_every_command_has_one_rule() -> None:
    assert set(COMMANDS) == set(CommandType)


async def test_download_twice_is_wrong_state(engine: FakeEngine, pub: RecordingPublisher) -> None:
    op = await operation(engine, pub, desired(component("web-x", image="img:1")))
    await run(op, "DOWNLOAD", "DOWNLOAD")
    assert pub.wire()[-1] == fb(
        "DOWNLOAD_FAILURE",
        act("web-x", "DOWNLOAD_SUCCESS", M_CREATED),
        message="DOWNLOAD is possible only after status IDENTIFIED is reported",
    )


@pytest.mark.parametrize(
    ("command", "failure"),
    [
        ("DOWNLOAD", "DOWNLOAD_FAILURE"),
        ("UPDATE", "UPDATE_FAILURE"),
        ("ACTIVATE", "ACTIVATION_FAILURE"),
        ("ROLLBACK", "ROLLBACK_FAILURE"),
    ],
)
async def test_unknown_baseline(
    engine: FakeEngine, pub: RecordingPublisher, command: str, failure: str
) -> None:
    op = await operation(engine, pub, desired(component("web-x", image="img:1")))
    await op.command(command, "BASELINE NAME")
    assert pub.wire()[-1] == fb(
        failure,
        act("web-x", "IDENTIFIED", M_CREATE),
        baseline="BASELINE NAME",
        message="Unknown baseline BASELINE NAME",
    )


async def test_d14_cleanup_unknown_baseline_is_cleanup_failure(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    op = await operation(engine, pub, desired(component("web-x", image="img:1")))
    await op.command("CLEANUP", "nope")
    assert pub.wire()[-1] == fb(
        "CLEANUP_FAILURE",
        act("web-x", "IDENTIFIED", M_CREATE),
        baseline="nope",
        message="Unknown baseline nope",
    )
    assert not op.finished


async def test_unknown_command_is_ignored(engine: FakeEngine, pub: RecordingPublisher) -> None:
    op = await operation(engine, pub, desired(component("web-x", image="img:1")))
    await op.command("DO", "")
    assert pub.statuses() == ["IDENTIFIED"]


# --- errors in each phase ---------------------------------------------------------------------


async def test_download_pull_failure_second_action(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_pull("img:2", "unauthorized")
    add_managed(engine, "web", image="img:1")
    op = await operation(
        engine, pub, desired(component("new-x", image="img:1"), component("web", image="img:2"))
    )
    engine.remove_image("img:1")
    await op.command("DOWNLOAD", "")
    assert pub.wire()[-1] == fb(
        "DOWNLOAD_FAILURE",
        act("new-x", "DOWNLOAD_SUCCESS", M_CREATED),
        act("web", "DOWNLOAD_FAILURE", "cannot pull image img:2: unauthorized"),
    )
    assert status_of(engine, "web") is ContainerStatus.RUNNING  # nothing stopped


async def test_download_failure_first_action_stops_the_phase(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_next("create_container", EngineError("no space left"))
    op = await operation(
        engine, pub, desired(component("aaa-x", image="img:1"), component("zzz-x", image="img:1"))
    )
    await op.command("DOWNLOAD", "")
    assert pub.wire()[1:] == [
        fb(
            "DOWNLOADING",
            act("aaa-x", "DOWNLOADING", M_CREATE),
            act("zzz-x", "IDENTIFIED", M_CREATE),
        ),
        fb(
            "DOWNLOAD_FAILURE",
            act("aaa-x", "DOWNLOAD_FAILURE", "no space left"),
            act("zzz-x", "IDENTIFIED", M_CREATE),
        ),
    ]


async def test_update_stop_failure(engine: FakeEngine, pub: RecordingPublisher) -> None:
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await op.command("DOWNLOAD", "")
    engine.fail_next("stop_container", EngineError("cannot stop web: timeout"))
    await op.command("UPDATE", "")
    assert pub.wire()[-1] == fb(
        "UPDATE_FAILURE", act("web", "UPDATE_FAILURE", "cannot stop web: timeout")
    )


async def test_update_runtime_update_failure(engine: FakeEngine, pub: RecordingPublisher) -> None:
    add_managed(engine, "svc", image="img:1", restartPolicy="no")
    op = await operation(engine, pub, desired(component("svc", image="img:1")))
    await op.command("DOWNLOAD", "")
    engine.fail_next("update_container", EngineError("cannot update svc"))
    await op.command("UPDATE", "")
    assert pub.wire()[-2:] == [
        fb("UPDATING", act("svc", "UPDATING", M_UPDATE)),
        fb("UPDATE_FAILURE", act("svc", "UPDATE_FAILURE", "cannot update svc")),
    ]


async def test_activate_start_failure(engine: FakeEngine, pub: RecordingPublisher) -> None:
    engine.fail_start("img:2", 'exec: "/app/run": stat /app/run: no such file or directory')
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE")
    assert pub.wire()[-1] == fb(
        "ACTIVATION_FAILURE",
        act(
            "web",
            "ACTIVATION_FAILURE",
            'cannot start container web: exec: "/app/run": '
            "stat /app/run: no such file or directory",
        ),
    )


async def test_cleanup_removal_failure(engine: FakeEngine, pub: RecordingPublisher) -> None:
    add_managed(engine, "old", image="img:1")
    op = await operation(engine, pub, desired())
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE")
    engine.fail_next("remove_container", EngineError("device busy"))
    await op.command("CLEANUP", "")
    failed = act("old", "REMOVAL_FAILURE", "device busy", "1")
    assert pub.wire()[-2:] == [fb("CLEANUP_FAILURE", failed), fb("INCOMPLETE", failed)]


# --- rollback ---------------------------------------------------------------------------------


async def test_d5_rollback_after_download_success_keeps_old_running(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    add_managed(engine, "svc", image="img:1", restartPolicy="no")
    op = await operation(
        engine,
        pub,
        desired(
            component("new-x", image="img:1"),
            component("web", image="img:2"),
            component("svc", image="img:1"),
        ),
    )
    await run(op, "DOWNLOAD", "ROLLBACK")
    n, w, s = "new-x", "web", "svc"
    assert pub.wire()[-6:] == [
        fb(
            "ROLLBACK",
            act(n, "UPDATING", M_CREATED),
            act(w, "DOWNLOAD_SUCCESS", M_CREATED),
            act(s, "IDENTIFIED", M_UPDATE),
        ),
        fb(
            "ROLLBACK",
            act(n, "UPDATE_FAILURE", M_RB_CREATE),
            act(w, "DOWNLOAD_SUCCESS", M_CREATED),
            act(s, "IDENTIFIED", M_UPDATE),
        ),
        fb(
            "ROLLBACK",
            act(n, "UPDATE_FAILURE", M_RB_CREATE),
            act(w, "UPDATING", M_CREATED),
            act(s, "IDENTIFIED", M_UPDATE),
        ),
        fb(
            "ROLLBACK",
            act(n, "UPDATE_FAILURE", M_RB_CREATE),
            act(w, "UPDATE_FAILURE", M_RB_RECREATE),
            act(s, "IDENTIFIED", M_UPDATE),
        ),
        fb(
            "ROLLBACK",
            act(n, "UPDATE_FAILURE", M_RB_CREATE),
            act(w, "UPDATE_FAILURE", M_RB_RECREATE),
            act(s, "UPDATING", M_UPDATE),
        ),
        fb(
            "ROLLBACK_SUCCESS",
            act(n, "UPDATE_FAILURE", M_RB_CREATE),
            act(w, "UPDATE_FAILURE", M_RB_RECREATE),
            act(s, "UPDATE_FAILURE", M_RB_UPDATE),
        ),
    ]
    assert sorted(engine.container_names()) == ["svc", "web"]
    assert status_of(engine, "web") is ContainerStatus.RUNNING


async def test_rollback_after_update_success_starts_old_and_destroyed(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    add_managed(engine, "old", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await run(op, "DOWNLOAD", "UPDATE")
    assert status_of(engine, "web") is ContainerStatus.EXITED
    assert status_of(engine, "old") is ContainerStatus.EXITED
    await op.command("ROLLBACK", "")
    # Kanto's feedback: the DESTROY action has no rollback step (D5 restarts it silently).
    assert pub.wire()[-3:] == [
        fb(
            "ROLLBACK",
            act("web", "UPDATING", M_STOPPED),
            act("old", "UPDATE_SUCCESS", M_STOPPED, "1"),
        ),
        fb(
            "ROLLBACK",
            act("web", "UPDATE_FAILURE", M_RB_RECREATE),
            act("old", "UPDATE_SUCCESS", M_STOPPED, "1"),
        ),
        fb(
            "ROLLBACK_SUCCESS",
            act("web", "UPDATE_FAILURE", M_RB_RECREATE),
            act("old", "UPDATE_SUCCESS", M_STOPPED, "1"),
        ),
    ]
    assert status_of(engine, "web") is ContainerStatus.RUNNING
    assert status_of(engine, "old") is ContainerStatus.RUNNING  # D5
    assert sorted(engine.container_names()) == ["old", "web"]
    await op.command("CLEANUP", "")
    assert pub.statuses()[-2:] == ["CLEANUP_SUCCESS", "INCOMPLETE"]
    assert sorted(engine.container_names()) == ["old", "web"]


async def test_rollback_after_activation_failure_restores_old(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_start("img:2", "no caps")
    add_managed(engine, "web", image="img:1")
    old_id = (await engine.inspect_container("web")).id
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "ROLLBACK", "CLEANUP")
    assert pub.statuses()[-5:] == [
        "ACTIVATION_FAILURE",
        "ROLLBACK",
        "ROLLBACK_SUCCESS",
        "CLEANUP_SUCCESS",
        "INCOMPLETE",
    ]
    assert pub.wire()[-1]["actions"] == [act("web", "UPDATE_FAILURE", M_RB_RECREATE)]
    await assert_only_container(engine, "web", old_id)


async def test_rollback_continues_past_errors(engine: FakeEngine, pub: RecordingPublisher) -> None:
    op = await operation(
        engine, pub, desired(component("aaa-x", image="img:1"), component("bbb-x", image="img:1"))
    )
    await op.command("DOWNLOAD", "")
    engine.fail_next("remove_container", EngineError("cannot remove aaa-x"))
    await op.command("ROLLBACK", "")
    assert pub.wire()[-1] == fb(
        "ROLLBACK_FAILURE",
        act("aaa-x", "UPDATE_FAILURE", "cannot remove aaa-x"),
        act("bbb-x", "UPDATE_FAILURE", M_RB_CREATE),
    )
    assert "bbb-x.cua-new" not in engine.container_names()


async def test_d4_update_rollback_restores_previous_limits(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "svc", image="img:1", restartPolicy="no", memory="100M")
    op = await operation(
        engine, pub, desired(component("svc", image="img:1", restartPolicy="always", memory="200M"))
    )
    await run(op, "DOWNLOAD", "UPDATE")
    spec = (await engine.inspect_container("svc")).spec
    assert spec.restart == RestartPolicy(RestartPolicyType.ALWAYS)
    assert spec.resources == memory_limits(memory="200M")
    await op.command("ROLLBACK", "")
    assert pub.wire()[-1] == fb("ROLLBACK_SUCCESS", act("svc", "UPDATE_FAILURE", M_RB_UPDATE))
    spec = (await engine.inspect_container("svc")).spec
    assert spec.restart == RestartPolicy(RestartPolicyType.NO)
    assert spec.resources == memory_limits(memory="100M")


# --- CLEANUP after a failure (D3) and completion (D6) ----------------------------------------


async def test_d3_cleanup_after_failed_activation_restores_the_device(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_start("img:2", "no caps")
    add_managed(engine, "web", image="img:1")
    add_managed(engine, "svc", image="img:1", restartPolicy="no")
    add_managed(engine, "old", image="img:1")
    op = await operation(
        engine,
        pub,
        desired(
            component("new-x", image="img:1"),
            component("web", image="img:2"),
            component("svc", image="img:1"),
        ),
    )
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE")
    before_cleanup = pub.wire()[-1]["actions"]
    await op.command("CLEANUP", "")
    # The feedback stays Kanto's: CLEANUP_SUCCESS, then INCOMPLETE, actions unchanged.
    assert pub.wire()[-2:] == [
        fb("CLEANUP_SUCCESS", *before_cleanup),
        fb("INCOMPLETE", *before_cleanup),
    ]
    assert sorted(engine.container_names()) == ["old", "svc", "web"]
    for name in ("old", "svc", "web"):
        assert status_of(engine, name) is ContainerStatus.RUNNING
    assert (await engine.inspect_container("web")).spec.image == "img:1"
    assert (await engine.inspect_container("svc")).spec.restart.type is RestartPolicyType.NO


async def test_d3_cleanup_after_failed_download_removes_new_containers(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_pull("img:2", "denied")
    op = await operation(
        engine, pub, desired(component("aaa-x", image="img:1"), component("bbb-x", image="img:2"))
    )
    await run(op, "DOWNLOAD", "CLEANUP")
    assert pub.statuses()[-3:] == ["DOWNLOAD_FAILURE", "CLEANUP_SUCCESS", "INCOMPLETE"]
    assert engine.container_names() == []


async def test_d6_completed_only_when_every_baseline_succeeded(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_start("img:2", "no caps")
    state = desired(
        component("aaa-x", image="img:2"),
        component("bbb-x", image="img:1"),
        baselines={"one": ["containers:aaa-x"], "two": ["containers:bbb-x"]},
    )
    op = await operation(engine, pub, state)
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP", baseline="one")
    assert pub.statuses()[-2:] == ["ACTIVATION_FAILURE", "CLEANUP_SUCCESS"]
    assert not op.finished  # `two` and remove-components remain
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP", baseline="two")
    # The last baseline cleaned is activated: Kanto would say COMPLETED (it looks at the
    # last cleaned baseline only, §3.4.3).
    remove = "containers:remove-components"
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP", baseline=remove)
    assert pub.statuses()[-3:] == ["ACTIVATION_SUCCESS", "CLEANUP_SUCCESS", "INCOMPLETE"]
    assert op.finished


async def test_d6_completed_when_every_baseline_was_activated_and_cleaned(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    state = desired(
        component("aaa-x", image="img:1"),
        component("bbb-x", image="img:1"),
        baselines={"one": ["containers:aaa-x"]},
    )
    op = await operation(engine, pub, state)
    for baseline in ("one", "containers:bbb-x", "containers:remove-components"):
        await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP", baseline=baseline)
    assert pub.statuses()[-2:] == ["CLEANUP_SUCCESS", "COMPLETED"]
    assert op.finished
    assert sorted(engine.container_names()) == ["aaa-x", "bbb-x"]


async def test_per_baseline_commands_touch_only_their_actions(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    state = desired(
        component("aaa-x", image="img:1"),
        component("bbb-x", image="img:1"),
        baselines={"one": ["containers:aaa-x"]},
    )
    op = await operation(engine, pub, state)
    await op.command("DOWNLOAD", "one")
    assert pub.wire()[-2:] == [
        fb(
            "DOWNLOADING",
            act("aaa-x", "DOWNLOADING", M_CREATE),
            act("bbb-x", "IDENTIFIED", M_CREATE),
            baseline="one",
        ),
        fb(
            "DOWNLOAD_SUCCESS",
            act("aaa-x", "DOWNLOAD_SUCCESS", M_CREATED),
            act("bbb-x", "IDENTIFIED", M_CREATE),
            baseline="one",
        ),
    ]
    # The implicit baseline of bbb-x has its own status; `*` too.
    await op.command("UPDATE", "containers:bbb-x")
    assert pub.wire()[-1]["status"] == "UPDATE_FAILURE"
    await op.command("DOWNLOAD", "containers:bbb-x")
    assert pub.wire()[-1]["status"] == "DOWNLOAD_SUCCESS"
    await op.command("DOWNLOAD", "*")  # `*` is still IDENTIFIED: runs again on all
    assert pub.wire()[-1]["baseline"] == "*"


async def test_all_baselines_cleanup_finishes_the_operation(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    state = desired(component("aaa-x", image="img:1"), baselines={"one": ["containers:aaa-x"]})
    op = await operation(engine, pub, state)
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP", baseline="*")
    assert pub.wire()[-2]["baseline"] == "*"
    assert pub.statuses()[-2:] == ["CLEANUP_SUCCESS", "COMPLETED"]
    assert "baseline" not in pub.wire()[-1]
    await op.command("DOWNLOAD", "")  # after the end: ignored
    assert pub.statuses()[-1] == "COMPLETED"


async def test_start_failure_error_type_message_is_the_engines(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "chk", image="img:1", running=False)
    engine.fail_next("start_container", StartFailedError("cannot start container chk: boom"))
    op = await operation(engine, pub, desired(component("chk", image="img:1")))
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE")
    assert pub.wire()[-1] == fb(
        "ACTIVATION_FAILURE", act("chk", "ACTIVATION_FAILURE", "cannot start container chk: boom")
    )


async def test_d7_d8_identified_message_names_ignored_entries(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    await operation(engine, pub, desired(component("web-x", image="img:1", port="localhost:1:2")))
    message = pub.wire()[0]["message"]
    assert "web-x" in message
    assert "port" in message


async def test_rollback_with_no_relevant_action_publishes_only_the_result(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "chk", image="img:1")
    op = await operation(engine, pub, desired(component("chk", image="img:1")))
    await run(op, "DOWNLOAD", "ROLLBACK")
    assert pub.wire()[-2:] == [
        fb("DOWNLOAD_SUCCESS", act("chk", "IDENTIFIED", M_CHECK)),
        fb("ROLLBACK_SUCCESS", act("chk", "IDENTIFIED", M_CHECK)),
    ]


async def test_d5_rollback_restart_failure_of_destroyed_container(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "old", image="img:1")
    op = await operation(engine, pub, desired())
    await run(op, "DOWNLOAD", "UPDATE")
    engine.fail_start("old", "no memory")
    await op.command("ROLLBACK", "")
    assert pub.wire()[-1] == fb(
        "ROLLBACK_FAILURE",
        act("old", "UPDATE_FAILURE", "cannot start container old: no memory", "1"),
    )


async def test_rollback_after_activation_success_restores_old(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    old_id = add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE", "ROLLBACK", "CLEANUP")
    assert pub.statuses()[-4:] == ["ROLLBACK", "ROLLBACK_SUCCESS", "CLEANUP_SUCCESS", "INCOMPLETE"]
    await assert_only_container(engine, "web", old_id)


async def test_activate_unpauses_a_paused_check_container(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "chk", image="img:1")
    await engine.pause_container("chk")
    op = await operation(engine, pub, desired(component("chk", image="img:1")))
    await run(op, "DOWNLOAD", "UPDATE", "ACTIVATE")
    assert pub.wire()[-1] == fb("ACTIVATION_SUCCESS", act("chk", "ACTIVATION_SUCCESS", M_RUNNING))
    assert status_of(engine, "chk") is ContainerStatus.RUNNING
    assert engine.call_count("unpause_container") == 1


async def test_activate_reads_the_states_of_checked_containers_in_one_listing(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    for name in ("a", "c", "d", "e"):
        add_managed(engine, name, image="img:1")
    stopped = add_managed(engine, "f", image="img:1", running=False)
    state = desired(*(component(n, image="img:1") for n in ("a", "c", "d", "e", "f")))
    op = await operation(engine, pub, state)
    await run(op, "DOWNLOAD", "UPDATE")
    engine.calls.clear()
    await op.command("ACTIVATE", "")
    assert pub.wire()[-1]["status"] == "ACTIVATION_SUCCESS"
    assert engine.call_count("list_containers") == 1
    # Only the stopped one is read again, then started, then read once after the window.
    assert [(c.method, c.args) for c in engine.calls if c.method != "list_containers"] == [
        ("inspect_container", (stopped,)),
        ("start_container", (stopped,)),
        ("inspect_container", (stopped,)),
    ]
    assert status_of(engine, "f") is ContainerStatus.RUNNING


async def test_activate_listing_failure_fails_the_first_checked_action(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "a", image="img:1")
    add_managed(engine, "c", image="img:1")
    op = await operation(
        engine, pub, desired(component("a", image="img:1"), component("c", image="img:1"))
    )
    await run(op, "DOWNLOAD", "UPDATE")
    engine.fail_next("list_containers", EngineError("engine gone"))
    await op.command("ACTIVATE", "")
    assert pub.wire()[-1] == fb(
        "ACTIVATION_FAILURE",
        act("a", "ACTIVATION_FAILURE", "engine gone"),
        act("c", "IDENTIFIED", M_CHECK),
    )


async def test_update_of_a_stopped_recreate_target_is_success_without_stop(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1", running=False)
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await run(op, "DOWNLOAD", "UPDATE")
    assert pub.wire()[-1] == fb("UPDATE_SUCCESS", act("web", "UPDATE_SUCCESS", M_STOPPED))
    assert engine.call_count("stop_container") == 0


async def test_recreate_keeps_old_running_until_update_and_uses_a_temporary_name(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await op.command("DOWNLOAD", "")
    assert sorted(engine.container_names()) == ["web", "web.cua-new"]
    assert status_of(engine, "web") is ContainerStatus.RUNNING
    await op.command("UPDATE", "")
    assert status_of(engine, "web") is ContainerStatus.EXITED
    await op.command("ACTIVATE", "")
    assert sorted(engine.container_names()) == ["web", "web.cua-old"]
    assert (await engine.inspect_container("web")).spec.image == "img:2"
    await op.command("CLEANUP", "")
    assert engine.container_names() == ["web"]


@pytest.mark.parametrize("failing_call", [1, 2])  # old steps aside / new takes the name
async def test_activate_rename_failure_then_rollback_restores_names(
    engine: FakeEngine, pub: RecordingPublisher, failing_call: int
) -> None:
    old_id = add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await run(op, "DOWNLOAD", "UPDATE")
    failure = EngineError("cannot rename: busy")
    if failing_call == 1:
        engine.fail_next("rename_container", failure)
    else:
        original = engine.rename_container
        calls = 0

        async def second_fails(container: str, new_name: str) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise failure
            await original(container, new_name)

        engine.rename_container = second_fails  # type: ignore[method-assign]
    await op.command("ACTIVATE", "")
    assert pub.wire()[-1] == fb(
        "ACTIVATION_FAILURE", act("web", "ACTIVATION_FAILURE", "cannot rename: busy")
    )
    await run(op, "ROLLBACK", "CLEANUP")
    assert pub.statuses()[-3:] == ["ROLLBACK_SUCCESS", "CLEANUP_SUCCESS", "INCOMPLETE"]
    await assert_only_container(engine, "web", old_id)


async def test_update_failure_when_the_old_container_vanished(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    op = await operation(engine, pub, desired(component("web", image="img:2")))
    await op.command("DOWNLOAD", "")
    await engine.remove_container("web")
    await op.command("UPDATE", "")
    assert pub.wire()[-1]["status"] == "UPDATE_FAILURE"
    assert pub.wire()[-1]["actions"][0]["message"].startswith("no such container")
