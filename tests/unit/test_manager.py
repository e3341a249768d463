"""The manager: modes, queueing and SUPERSEDED (D9), identification feedback (§4.3),
download progress, graceful stop (crash recovery: test_recovery.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cua.api.models import CommandType, DesiredStateCommand, DesiredStateFeedback
from cua.containers.parse import parse_component
from cua.containers.state import ContainerStatus, ContainerSummary
from cua.engine.base import EngineError, EngineUnavailableError, PullProgress
from cua.settings import Manage, Mode
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher, collapse_progress
from cua.update.downloads import Downloads
from cua.update.manager import UpdateManager
from cua.update.publisher import Delivered
from tests.builders import (
    HELLO,
    M_CREATE,
    M_CREATED,
    M_RB_RECREATE,
    M_STARTED,
    GatedPublisher,
    Running,
    act,
    add_managed,
    assert_only_container,
    component,
    desired,
    fb,
    settings,
    standalone_statuses,
    until,
)

pytestmark = pytest.mark.unit


def last_status(pub: RecordingPublisher, aid: str) -> str:
    statuses = pub.statuses(aid)
    return statuses[-1] if statuses else ""


# --- orchestrated: Kanto's flow -------------------------------------------------------------


async def test_spec_4_4_orchestrated_over_the_manager(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    async with Running(engine, pub, mode=Mode.ORCHESTRATED) as manager:
        manager.submit_desired_state("A", desired(component("hello-world", "latest", image=HELLO)))
        await until(lambda: last_status(pub, "A") == "IDENTIFIED")
        for command, wait_for in (
            ("DOWNLOAD", "DOWNLOAD_SUCCESS"),
            ("UPDATE", "UPDATE_SUCCESS"),
            ("ACTIVATE", "ACTIVATION_SUCCESS"),
            ("CLEANUP", "COMPLETED"),
        ):
            manager.submit_command("A", DesiredStateCommand(command=command))
            await until(lambda w=wait_for: last_status(pub, "A") == w)  # type: ignore[misc]

    def h(status: str, message: str) -> dict[str, object]:
        return act("hello-world", status, message, "latest")

    assert pub.wire("A") == [
        fb("IDENTIFYING"),
        fb("IDENTIFIED", h("IDENTIFIED", M_CREATE)),
        fb("DOWNLOADING", h("DOWNLOADING", M_CREATE)),
        fb("DOWNLOAD_SUCCESS", h("DOWNLOAD_SUCCESS", M_CREATED)),
        fb("UPDATE_SUCCESS", h("DOWNLOAD_SUCCESS", M_CREATED)),
        fb("ACTIVATING", h("ACTIVATING", M_CREATED)),
        fb("ACTIVATION_SUCCESS", h("ACTIVATION_SUCCESS", M_STARTED)),
        fb("CLEANUP_SUCCESS", h("ACTIVATION_SUCCESS", M_STARTED)),
        fb("COMPLETED", h("ACTIVATION_SUCCESS", M_STARTED)),
    ]


async def test_orchestrated_commands_for_other_activity_are_ignored(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    async with Running(engine, pub, mode=Mode.ORCHESTRATED) as manager:
        manager.submit_command("X", DesiredStateCommand(command="DOWNLOAD"))  # nothing pending
        manager.submit_desired_state("A", desired(component("web-x", image="img:1")))
        await until(lambda: last_status(pub, "A") == "IDENTIFIED")
        manager.submit_command("B", DesiredStateCommand(command="DOWNLOAD"))
        manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD"))
        await until(lambda: last_status(pub, "A") == "DOWNLOAD_SUCCESS")
    assert pub.statuses("B") == []
    assert pub.statuses("X") == []


async def test_d9_orchestrated_pending_operation_superseded_and_restored(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    async with Running(engine, pub, mode=Mode.ORCHESTRATED) as manager:
        manager.submit_desired_state("A", desired(component("web", image="img:2")))
        await until(lambda: last_status(pub, "A") == "IDENTIFIED")
        manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD"))
        await until(lambda: last_status(pub, "A") == "DOWNLOAD_SUCCESS")
        assert "web.cua-new" in engine.container_names()
        manager.submit_desired_state("B", desired(component("web", image="img:1")))
        await until(lambda: last_status(pub, "B") == "IDENTIFIED")
        manager.submit_command("A", DesiredStateCommand(command="UPDATE"))  # A is gone
        manager.submit_command("B", DesiredStateCommand(command="DOWNLOAD"))
        await until(lambda: last_status(pub, "B") == "DOWNLOAD_SUCCESS")
    assert pub.wire("A")[-1] == fb(
        "SUPERSEDED",
        act("web", "DOWNLOAD_SUCCESS", M_CREATED),
        message="replaced by a newer desired state (activityId B)",
    )
    assert pub.statuses("A").count("SUPERSEDED") == 1
    assert engine.container_names() == ["web"]  # A's new container removed
    # B's IDENTIFYING, then A's SUPERSEDED (B has actions, so it replaces A), then B's
    # IDENTIFIED on the restored device.
    order = [(aid, m.to_wire()["status"]) for aid, m in pub.messages]
    start = order.index(("B", "IDENTIFYING"))
    assert order[start : start + 3] == [
        ("B", "IDENTIFYING"),
        ("A", "SUPERSEDED"),
        ("B", "IDENTIFIED"),
    ]


async def test_d9_parse_failure_keeps_the_pending_operation(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    async with Running(engine, pub, mode=Mode.ORCHESTRATED) as manager:
        manager.submit_desired_state("A", desired(component("web-x", image="img:1")))
        await until(lambda: last_status(pub, "A") == "IDENTIFIED")
        manager.submit_desired_state("B", desired(component("bad", image="")))
        await until(lambda: last_status(pub, "B") == "IDENTIFICATION_FAILED")
        manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD"))
        await until(lambda: last_status(pub, "A") == "DOWNLOAD_SUCCESS")
    assert pub.statuses("B") == ["IDENTIFICATION_FAILED"]  # no IDENTIFYING first (§4.3)


# --- standalone --------------------------------------------------------------------------------


async def test_standalone_runs_every_phase_with_kantos_feedback(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    async with Running(engine, pub) as manager:
        manager.submit_desired_state("A", desired(component("hello-world", "latest", image=HELLO)))
        await until(lambda: last_status(pub, "A") == "COMPLETED")
    assert pub.statuses("A") == standalone_statuses()
    assert (await engine.inspect_container("hello-world")).state.status is ContainerStatus.RUNNING


async def test_standalone_auto_rollback_on_start_failure(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_start("img:2", 'exec: "/app/run": stat /app/run: no such file or directory')
    old_id = add_managed(engine, "web", image="img:1")
    status = await UpdateManager(engine, pub, settings()).apply(
        "A", desired(component("web", image="img:2"))
    )
    assert status == "INCOMPLETE"
    assert pub.statuses("A") == standalone_statuses(updating=1, fails="ACTIVATION")
    assert pub.wire("A")[-1] == fb("INCOMPLETE", act("web", "UPDATE_FAILURE", M_RB_RECREATE))
    await assert_only_container(engine, "web", old_id)


async def test_standalone_pull_failure_stops_nothing(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_pull("img:2", "manifest unknown")
    add_managed(engine, "web", image="img:1")
    status = await UpdateManager(engine, pub, settings()).apply(
        "A", desired(component("web", image="img:2"))
    )
    assert status == "INCOMPLETE"
    assert pub.statuses("A") == standalone_statuses(fails="DOWNLOAD")
    assert engine.call_count("stop_container") == 0
    assert (await engine.inspect_container("web")).state.status is ContainerStatus.RUNNING


async def test_standalone_commands_for_running_operation_get_wrong_state(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    gated = GatedPublisher()
    gate = gated.gate
    async with Running(engine, gated) as manager:
        manager.submit_desired_state("A", desired(component("web-x", image="img:1")))
        await until(lambda: last_status(gated, "A") == "DOWNLOADING")
        manager.submit_command("A", DesiredStateCommand(command="UPDATE"))
        manager.submit_command("A", DesiredStateCommand(command="CLEANUP", baseline="*"))
        manager.submit_command("Z", DesiredStateCommand(command="UPDATE"))
        await until(lambda: len(gated.statuses("A")) == 5)
        gate.set()
        await until(lambda: last_status(gated, "A") == "COMPLETED")
    wire = gated.wire("A")
    assert wire[3] == fb(
        "UPDATE_FAILURE",
        act("web-x", "DOWNLOADING", M_CREATE),
        message="UPDATE is possible only after status DOWNLOAD_SUCCESS is reported",
    )
    assert wire[4] == fb(
        "CLEANUP_FAILURE",
        act("web-x", "DOWNLOADING", M_CREATE),
        baseline="*",
        message="CLEANUP is not possible while the operation runs (standalone mode)",
    )
    assert gated.statuses("Z") == []


async def test_d9_waiting_desired_states_only_newest_kept(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    gate = asyncio.Event()

    class GatedPublisher(RecordingPublisher):
        async def publish_feedback(
            self,
            activity_id: str,
            feedback: DesiredStateFeedback,
            on_delivered: Delivered | None = None,
        ) -> None:
            await super().publish_feedback(activity_id, feedback, on_delivered)
            if activity_id == "A" and feedback.status == "IDENTIFYING":
                await gate.wait()

    gated = GatedPublisher()
    async with Running(engine, gated) as manager:
        manager.submit_desired_state("A", desired(component("web-x", image="img:1")))
        await until(lambda: last_status(gated, "A") == "IDENTIFYING")
        manager.submit_desired_state("B", desired(component("web-x", image="img:2")))
        manager.submit_desired_state("C", desired(component("web-x", image="img:2")))
        manager.submit_desired_state("D", desired(component("web-x", image="img:1")))
        await until(lambda: gated.statuses("C") == ["SUPERSEDED"])
        assert last_status(gated, "A") == "IDENTIFYING"  # A still runs; D waits
        gate.set()
        await until(lambda: last_status(gated, "D") == "COMPLETED")
    assert gated.wire("B") == [
        fb("SUPERSEDED", message="replaced by a newer desired state (activityId C)")
    ]
    assert gated.wire("C") == [
        fb("SUPERSEDED", message="replaced by a newer desired state (activityId D)")
    ]
    assert last_status(gated, "A") == "COMPLETED"
    assert gated.statuses("D")[:2] == ["IDENTIFYING", "IDENTIFIED"]
    assert gated.wire("D")[1]["actions"][0]["message"] == (
        "No changes detected, existing container will be check only if it is running."
    )


# --- identification feedback (§4.3) ----------------------------------------------------------


async def test_no_actions_completes_right_away(engine: FakeEngine, pub: RecordingPublisher) -> None:
    status = await UpdateManager(engine, pub, settings()).apply("A", desired())
    assert status == "COMPLETED"
    assert pub.wire("A") == [fb("IDENTIFYING"), fb("IDENTIFIED"), fb("COMPLETED")]


@pytest.mark.parametrize(
    "limits",
    [
        {"memory": "100M"},
        {"memory": "100M", "memorySwap": "200M"},  # the engine's default, given explicitly
        {"memory": "100M", "memorySwap": "300M"},
        {"memory": "100M", "memorySwap": "-1"},
    ],
)
async def test_d12_no_spurious_update_for_memory_limits(
    engine: FakeEngine, pub: RecordingPublisher, limits: dict[str, str]
) -> None:
    manager = UpdateManager(engine, pub, settings())
    wanted = desired(component("web-x", image="img:1", **limits))
    assert await manager.apply("A", wanted) == "COMPLETED"
    assert [str(a.kind) for a in (await manager.plan(wanted)).actions] == ["CHECK"]


async def test_parse_failure_exact_message_without_identifying(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    state = desired(domain="other")
    status = await UpdateManager(engine, pub, settings()).apply("A", state)
    assert status == "IDENTIFICATION_FAILED"
    assert pub.wire("A") == [
        fb(
            "IDENTIFICATION_FAILED",
            message="domain id mismatch - expecting containers, received other",
        )
    ]


async def test_listing_failure_is_identification_failed(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.fail_next("list_containers", EngineUnavailableError("cannot reach the engine"))
    engine.fail_next("list_containers", EngineUnavailableError("cannot reach the engine"))
    await UpdateManager(engine, pub, settings()).apply(
        "A", desired(component("web-x", image="img:1"))
    )
    assert pub.wire("A") == [
        fb("IDENTIFYING"),
        fb("IDENTIFICATION_FAILED", message="cannot reach the engine"),
    ]


async def test_labelled_mode_name_taken_by_unmanaged_container(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.add_container("web", parse_component(component("web", image="img:1")).spec)
    await UpdateManager(engine, pub, settings()).apply(
        "A", desired(component("web", image="img:2"))
    )
    assert pub.statuses("A") == ["IDENTIFYING", "IDENTIFICATION_FAILED"]
    assert "not managed by this agent" in pub.wire("A")[-1]["message"]
    assert (await engine.inspect_container("web")).spec.image == "img:1"


async def test_all_mode_destroys_unmanaged_and_system_containers_untouched(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.add_container("foreign", parse_component(component("foreign", image="img:1")).spec)
    engine.add_container("sys-x", parse_component(component("sys-x", image="img:1")).spec)
    status = await UpdateManager(
        engine, pub, settings(manage=Manage.ALL, system_containers=("sys-x",))
    ).apply("A", desired())
    assert status == "COMPLETED"
    assert engine.container_names() == ["sys-x"]


async def test_report_invalid_is_published_in_order(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    async with Running(engine, pub) as manager:
        manager.report_invalid("bad", "invalid desired state: not valid JSON at line 1 column 2")
        await until(lambda: pub.statuses("bad") != [])
    assert pub.wire("bad") == [
        fb(
            "IDENTIFICATION_FAILED",
            message="invalid desired state: not valid JSON at line 1 column 2",
        )
    ]


# --- parallel downloads and progress ---------------------------------------------------------


class SlowPullEngine(FakeEngine):
    """Pulls advance in steps as the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.step = asyncio.Event()
        self.concurrent = 0
        self.max_concurrent = 0

    def pull_image(self, image: str) -> AsyncIterator[PullProgress]:
        return self._slow(image)

    async def _slow(self, image: str) -> AsyncIterator[PullProgress]:
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            for done in (10, 40, 70):
                await self.step.wait()
                self.step.clear()
                yield PullProgress(image, done, 100)
            async for item in super().pull_image(image):
                yield item
        finally:
            self.concurrent -= 1


async def test_every_pull_of_an_update_starts_at_once_by_default(pub: RecordingPublisher) -> None:
    """The engine bounds its own layer downloads: the agent does not hold the 5th pull back
    (`download_concurrency` 16)."""
    slow = SlowPullEngine()
    images = [f"img:{i}" for i in range(5)]
    for ref in images:
        slow.add_registry_image(ref)
    manager = UpdateManager(slow, pub, settings(progress_interval=0.02))
    state = desired(*(component(f"c{i}-x", image=ref) for i, ref in enumerate(images)))
    async with asyncio.TaskGroup() as group:
        applying = group.create_task(manager.apply("A", state))
        await until(lambda: slow.concurrent == len(images))
        while not applying.done():
            slow.step.set()
            await asyncio.sleep(0.01)
    assert applying.result() == "COMPLETED"
    assert slow.max_concurrent == len(images)


async def test_parallel_downloads_with_progress_collapse_to_kantos_sequence(
    pub: RecordingPublisher,
) -> None:
    slow = SlowPullEngine()
    for ref in ("img:1", "img:2", "img:3"):
        slow.add_registry_image(ref)
    manager = UpdateManager(slow, pub, settings(progress_interval=0.02, download_concurrency=2))

    async def release() -> None:
        while True:
            await asyncio.sleep(0.03)
            slow.step.set()

    async with asyncio.TaskGroup() as group:
        releaser = group.create_task(release())
        status = await manager.apply(
            "A",
            desired(
                component("aaa-x", image="img:1"),
                component("bbb-x", image="img:2"),
                component("ccc-x", image="img:3"),
            ),
        )
        releaser.cancel()
    assert status == "COMPLETED"
    assert slow.max_concurrent == 2
    wire = pub.wire("A")
    progress = [m for m in wire if any("progress" in a for a in m.get("actions", []))]
    assert progress, "expected progress-only DOWNLOADING messages"
    for message in progress:
        assert message["status"] == "DOWNLOADING"
        values = [a["progress"] for a in message["actions"] if "progress" in a]
        assert len(values) == 1
        assert 0 < values[0] < 100

    reference = RecordingPublisher()
    plain = FakeEngine()
    for ref in ("img:1", "img:2", "img:3"):
        plain.add_registry_image(ref)
    await UpdateManager(plain, reference, settings()).apply(
        "A",
        desired(
            component("aaa-x", image="img:1"),
            component("bbb-x", image="img:2"),
            component("ccc-x", image="img:3"),
        ),
    )
    assert collapse_progress(wire) == reference.wire("A")


async def test_download_progress_never_goes_back_when_a_later_layer_reports_its_size() -> None:
    # Docker reports a layer's size only when its download starts (3 at a time): the summed
    # total grows, and done/total alone would go from 90 % back to 9 %.
    steps = [asyncio.Event() for _ in range(3)]
    reached = [asyncio.Event() for _ in range(3)]

    class LayeredPull(FakeEngine):
        def pull_image(self, image: str) -> AsyncIterator[PullProgress]:
            return self._layers(image)

        async def _layers(self, image: str) -> AsyncIterator[PullProgress]:
            for index, (done, total) in enumerate(((90, 100), (100, 1000), (600, 1000))):
                yield PullProgress(image, done, total)
                reached[index].set()
                await steps[index].wait()
            self.add_image(image)
            yield PullProgress(image, 1000, 1000, complete=True)

    async with Downloads(LayeredPull(), ["img:1"], always=True, concurrency=1) as downloads:
        seen = []
        for index in range(3):
            await reached[index].wait()
            seen.append(downloads.percent("img:1"))
            steps[index].set()
        assert await downloads.wait("img:1", 5.0)
    assert seen == [90, 90, 90]


async def test_pull_only_when_missing_unless_pull_always(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.add_image("img:1")
    await UpdateManager(engine, pub, settings()).apply(
        "A", desired(component("web-x", image="img:1"))
    )
    assert engine.call_count("pull_image") == 0
    await UpdateManager(engine, pub, settings(pull_always=True)).apply(
        "B", desired(component("web-x", image="img:2"))
    )
    assert engine.call_count("pull_image") == 1


# --- stop ------------------------------------------------------------------------------------


async def test_graceful_stop_mid_operation_reports_and_ends(pub: RecordingPublisher) -> None:
    slow = SlowPullEngine()
    slow.add_registry_image("img:1")
    manager = UpdateManager(slow, pub, settings(progress_interval=0.01))
    task = asyncio.create_task(manager.run())
    manager.submit_desired_state("A", desired(component("web-x", image="img:1")))
    await until(lambda: last_status(pub, "A") == "DOWNLOADING")
    await asyncio.wait_for(manager.stop(), 5)
    await task
    assert pub.statuses("A")[-2:] == ["DOWNLOAD_FAILURE", "INCOMPLETE"]
    assert "stopping" in pub.wire("A")[-1]["actions"][0]["message"]


async def test_graceful_stop_during_identification_does_not_start_the_update(
    pub: RecordingPublisher,
) -> None:
    listing, release = asyncio.Event(), asyncio.Event()

    class SlowListing(FakeEngine):
        async def list_containers(self) -> list[ContainerSummary]:
            if self.call_count("list_containers") > 0:  # not recovery's, identification's
                listing.set()
                await release.wait()
            return await super().list_containers()

    slow = SlowListing()
    slow.add_registry_image("img:1")
    manager = UpdateManager(slow, pub, settings())
    task = asyncio.create_task(manager.run())
    manager.submit_desired_state("A", desired(component("web-x", image="img:1")))
    await listing.wait()  # identifying
    stopping = asyncio.create_task(manager.stop())
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(stopping, 5)
    await task
    assert slow.call_count("create_container") == 0
    assert pub.statuses("A")[-2:] == ["DOWNLOAD_FAILURE", "INCOMPLETE"]


async def test_d12_no_update_after_a_runtime_update(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "svc", image="img:1", restartPolicy="no", memory="100M")
    wanted = desired(component("svc", image="img:1", restartPolicy="always", memory="200M"))
    manager = UpdateManager(engine, pub, settings())
    assert [str(a.kind) for a in (await manager.plan(wanted)).actions] == ["UPDATE"]
    assert await manager.apply("A", wanted) == "COMPLETED"
    # The labels still record the old values; the engine's runtime values count.
    assert [str(a.kind) for a in (await manager.plan(wanted)).actions] == ["CHECK"]


async def test_a_repeated_no_op_is_settled_from_the_listing(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    for name in ("a", "b"):
        add_managed(engine, name, image="img:1", restartPolicy="no")
    same = desired(
        component("a", image="img:1", restartPolicy="no"),
        component("b", image="img:1", restartPolicy="no"),
    )
    manager = UpdateManager(engine, pub, settings())
    assert await manager.apply("first", same) == "COMPLETED"  # reads each container once
    engine.calls.clear()
    assert await manager.apply("again", same) == "COMPLETED"
    assert engine.call_count("inspect_container") == 0
    # A runtime UPDATE by the agent unsettles its container: read again next time.
    changed = desired(
        component("a", image="img:1", restartPolicy="always"),
        component("b", image="img:1", restartPolicy="no"),
    )
    assert await manager.apply("update", changed) == "COMPLETED"
    engine.calls.clear()
    assert [str(a.kind) for a in (await manager.plan(same)).actions] == ["UPDATE", "CHECK"]
    assert [c.args[0] for c in engine.calls if c.method == "inspect_container"] == [
        (await engine.inspect_container("a")).id
    ]


async def test_a_pending_operations_containers_are_read_again(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """Orchestrated: a container read (and settled) while an operation is pending, then
    updated at runtime by that operation, is read again once the operation is done."""
    add_managed(engine, "web", image="img:1", restartPolicy="no")
    same = desired(component("web", image="img:1", restartPolicy="no"))
    always = desired(component("web", image="img:1", restartPolicy="always"))
    async with Running(engine, pub, mode=Mode.ORCHESTRATED) as manager:
        manager.submit_desired_state("A", always)
        await until(lambda: last_status(pub, "A") == "IDENTIFIED")
        steps = [("DOWNLOAD", "DOWNLOAD_SUCCESS"), ("UPDATE", "UPDATE_SUCCESS")]
        steps += [("ACTIVATE", "ACTIVATION_SUCCESS"), ("CLEANUP", "COMPLETED")]
        for command, end in steps:
            if command == "UPDATE":  # read while A is pending, before its runtime update
                assert [str(a.kind) for a in (await manager.plan(same)).actions] == ["CHECK"]
            manager.submit_command("A", DesiredStateCommand(command=command))
            await until(lambda end=end: last_status(pub, "A") == end)
        engine.calls.clear()
        plan = await manager.plan(same)
    assert [str(a.kind) for a in plan.actions] == ["UPDATE"]  # back to "no"
    assert engine.call_count("inspect_container") == 1


@pytest.mark.parametrize("newer", ["no actions", "listing fails", "name taken"])
async def test_pending_operation_kept_when_the_newer_desired_state_does_not_replace_it(
    engine: FakeEngine, pub: RecordingPublisher, newer: str
) -> None:
    """Kanto §3.8: only a desired state with actions replaces the pending operation."""
    add_managed(engine, "web", image="img:1")
    async with Running(engine, pub, mode=Mode.ORCHESTRATED) as manager:
        manager.submit_desired_state("A", desired(component("web", image="img:2")))
        await until(lambda: last_status(pub, "A") == "IDENTIFIED")
        manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD"))
        await until(lambda: last_status(pub, "A") == "DOWNLOAD_SUCCESS")
        if newer == "no actions":
            state = desired(
                config=[("systemContainers", "web")]
            )  # nothing desired, nothing removable
            end = "COMPLETED"
        elif newer == "listing fails":
            engine.fail_next("list_containers", EngineError("engine busy"))
            state = desired(component("web", image="img:1"))
            end = "IDENTIFICATION_FAILED"
        else:  # the desired name is taken by a container this agent does not manage
            engine.add_container("other", parse_component(component("other")).spec)
            state = desired(component("other", image="img:1"))
            end = "IDENTIFICATION_FAILED"
        manager.submit_desired_state("B", state)
        await until(lambda: last_status(pub, "B") == end)
        # A is still pending, with its new container, and goes on.
        assert "web.cua-new" in engine.container_names()
        manager.submit_command("A", DesiredStateCommand(command="UPDATE"))
        await until(lambda: last_status(pub, "A") == "UPDATE_SUCCESS")
    assert "SUPERSEDED" not in pub.statuses("A")


async def test_undecodable_command_gets_its_failure_and_changes_nothing(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    async with Running(engine, pub, mode=Mode.ORCHESTRATED) as manager:
        manager.submit_desired_state("A", desired(component("web", image="img:1")))
        await until(lambda: last_status(pub, "A") == "IDENTIFIED")
        manager.report_invalid_command("A", CommandType.DOWNLOAD, "invalid command: why")
        manager.report_invalid_command("other", CommandType.DOWNLOAD, "not this one")
        await until(lambda: last_status(pub, "A") == "DOWNLOAD_FAILURE")
        assert pub.wire("A")[-1] == fb(
            "DOWNLOAD_FAILURE", act("web", "IDENTIFIED", M_CREATE), message="invalid command: why"
        )
        manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD"))  # still IDENTIFIED
        await until(lambda: last_status(pub, "A") == "DOWNLOAD_SUCCESS")
    assert pub.wire("other") == []


async def test_d9_superseded_pending_operation_reverts_its_runtime_update(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "svc", image="img:1", restartPolicy="no")
    async with Running(engine, pub, mode=Mode.ORCHESTRATED) as manager:
        manager.submit_desired_state("A", desired(component("svc", image="img:1")))
        await until(lambda: last_status(pub, "A") == "IDENTIFIED")
        manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD"))
        manager.submit_command("A", DesiredStateCommand(command="UPDATE"))
        await until(lambda: last_status(pub, "A") == "UPDATE_SUCCESS")
        manager.submit_desired_state(
            "B", desired(component("svc", image="img:1", restartPolicy="no"))
        )
        await until(lambda: last_status(pub, "B") == "IDENTIFIED")
    assert last_status(pub, "A") == "SUPERSEDED"
    spec = (await engine.inspect_container("svc")).spec
    assert str(spec.restart.type) == "no"
    assert pub.wire("B")[1]["actions"][0]["message"] == (
        "No changes detected, existing container will be check only if it is running."
    )


async def test_failing_publisher_does_not_stop_the_operation(engine: FakeEngine) -> None:
    class Broken:
        async def publish_feedback(
            self,
            activity_id: str,
            feedback: DesiredStateFeedback,
            on_delivered: Delivered | None = None,
        ) -> None:
            raise ConnectionError("broker gone")

    status = await UpdateManager(engine, Broken(), settings()).apply(
        "A", desired(component("web-x", image="img:1"))
    )
    assert status == "COMPLETED"
    assert engine.container_names() == ["web-x"]


async def test_unknown_keys_are_in_the_identified_message_and_fail_strict(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    typo = 'payload.domains[0]: unknown key "confg" ignored (did you mean "config"?)'
    manager = UpdateManager(engine, pub, settings())
    status = await manager.apply("A", desired(component("web", image="img:1")), [typo])
    assert status == "COMPLETED"
    identified = pub.wire("A")[1]
    assert identified["status"] == "IDENTIFIED"
    assert identified["message"] == typo
    strict = UpdateManager(engine, pub, settings(strict=True))
    status = await strict.apply("B", desired(component("web", image="img:1")), [typo])
    assert status == "IDENTIFICATION_FAILED"
    assert pub.wire("B")[-1]["message"] == f"strict mode: {typo}"


# --- a no-op is settled from identification's listing (#13) ------------------------------------


async def test_a_no_op_reads_the_engine_with_one_listing(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    for name in ("a", "b", "c"):
        add_managed(engine, name, image="img:1")
    manager = UpdateManager(engine, pub, settings())
    state = desired(*(component(name, image="img:1") for name in ("a", "b", "c")))
    await manager.apply("A", state)  # settles the containers (their inspects)
    engine.calls.clear()
    status = await manager.apply("B", state)
    assert status == "COMPLETED"
    assert pub.statuses("B")[-6:] == [
        "ACTIVATING", "ACTIVATING", "ACTIVATING", "ACTIVATION_SUCCESS", "CLEANUP_SUCCESS",
        "COMPLETED",
    ]  # fmt: skip
    # `apply` (the tools' flow) runs recovery first, which lists; then ACTIVATE takes the
    # states identification listed: one listing, no other engine call
    assert [call.method for call in engine.calls] == ["list_containers"] * 2


async def test_a_stopped_container_of_a_no_op_is_still_started(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1", running=False)
    status = await UpdateManager(engine, pub, settings()).apply(
        "A", desired(component("web", image="img:1"))
    )
    assert status == "COMPLETED"
    assert (await engine.inspect_container("web")).state.status is ContainerStatus.RUNNING


async def test_a_plan_with_a_change_lists_again_at_activate(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "web", image="img:1")
    add_managed(engine, "db", image="img:1")
    manager = UpdateManager(engine, pub, settings())
    await manager.apply(
        "A", desired(component("web", image="img:1"), component("db", image="img:1"))
    )
    engine.calls.clear()  # the first apply's recovery and settling reads
    status = await manager.apply(
        "B", desired(component("web", image="img:2"), component("db", image="img:1"))
    )
    assert status == "COMPLETED"
    # recovery's, identification's, then ACTIVATE's own for the unchanged db (the device
    # changed since)
    assert engine.call_count("list_containers") == 3
