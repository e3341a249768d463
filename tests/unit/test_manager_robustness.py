"""No message can stop the manager: a bug met while handling one message is logged and
answered with that phase's failure, and the next message is served; an operation of many
components does not cost the square of its size in model building."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cua.api.models import ActionStatusType, DesiredStateCommand, DesiredStateFeedback, StatusType
from cua.settings import Mode
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update import manager as manager_module
from cua.update.manager import UpdateManager
from cua.update.operation import Operation
from cua.update.publisher import Delivered
from tests.builders import GatedPublisher, component, desired, settings, until

pytestmark = pytest.mark.unit

INTERNAL = "internal error in the update agent (RuntimeError); the agent log has the details"


def boom(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected")


async def run_manager(
    engine: FakeEngine, pub: RecordingPublisher, **overrides: Any
) -> tuple[UpdateManager, asyncio.Task[None]]:
    manager = UpdateManager(engine, pub, settings(**overrides))
    return manager, asyncio.create_task(manager.run())


async def finish(manager: UpdateManager, task: asyncio.Task[None]) -> None:
    await asyncio.wait_for(manager.stop(), 5)
    await task


def last(pub: RecordingPublisher, aid: str) -> str:
    statuses = pub.statuses(aid)
    return statuses[-1] if statuses else ""


async def test_error_while_parsing_is_identification_failed_and_the_next_runs(
    engine: FakeEngine,
    pub: RecordingPublisher,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = manager_module.parse_desired_state

    def flaky(state: Any, domain: str, **kwargs: Any) -> Any:
        if state.domains[0].components[0].id == "poison":
            raise RuntimeError("injected")
        return real(state, domain, **kwargs)

    monkeypatch.setattr(manager_module, "parse_desired_state", flaky)
    manager, task = await run_manager(engine, pub)
    manager.submit_desired_state("bad", desired(component("poison", image="img:1")))
    manager.submit_desired_state("good", desired(component("web", image="img:1")))
    await until(lambda: last(pub, "good") == "COMPLETED")
    await finish(manager, task)
    assert pub.wire("bad") == [{"status": "IDENTIFICATION_FAILED", "message": INTERNAL}]
    assert "Traceback" in caplog.text
    assert "RuntimeError: injected" in caplog.text


async def test_error_in_an_orchestrated_command_is_its_failure(
    engine: FakeEngine, pub: RecordingPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, task = await run_manager(engine, pub, mode=Mode.ORCHESTRATED)
    manager.submit_desired_state("A", desired(component("web", image="img:1")))
    await until(lambda: last(pub, "A") == "IDENTIFIED")
    with monkeypatch.context() as patch:
        patch.setattr(Operation, "command", boom)
        manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD", baseline="b"))
        await until(lambda: last(pub, "A") == "DOWNLOAD_FAILURE")
    assert pub.wire("A")[-1] == {
        "baseline": "b",
        "status": "DOWNLOAD_FAILURE",
        "message": INTERNAL,
    }
    manager.submit_command("A", DesiredStateCommand(command="DOWNLOAD"))  # still served
    await until(lambda: last(pub, "A") == "DOWNLOAD_SUCCESS")
    await finish(manager, task)


async def test_error_answering_a_standalone_command_is_its_failure(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = GatedPublisher()
    monkeypatch.setattr(Operation, "reject", boom)
    manager, task = await run_manager(engine, pub)
    manager.submit_desired_state("A", desired(component("web", image="img:1")))
    await until(lambda: last(pub, "A") == "DOWNLOADING")
    manager.submit_command("A", DesiredStateCommand(command="UPDATE"))
    await until(lambda: last(pub, "A") == "UPDATE_FAILURE")
    pub.gate.set()
    await until(lambda: last(pub, "A") == "COMPLETED")
    await finish(manager, task)
    assert {"status": "UPDATE_FAILURE", "message": INTERNAL} in pub.wire("A")


async def test_error_during_a_standalone_operation_ends_it_incomplete(
    engine: FakeEngine, pub: RecordingPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Operation, "run_standalone", boom)
    manager, task = await run_manager(engine, pub)
    manager.submit_desired_state("A", desired(component("web", image="img:1")))
    await until(lambda: last(pub, "A") == "INCOMPLETE")
    monkeypatch.undo()
    manager.submit_desired_state("B", desired(component("web", image="img:1")))
    await until(lambda: last(pub, "B") == "COMPLETED")
    await finish(manager, task)
    assert pub.wire("A")[-1]["message"] == INTERNAL


async def test_feedback_rebuilds_only_the_actions_that_changed(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """Every message carries every action: with many components, rebuilding each of them
    for each message made an operation of 1,000 components take 45 s (now about 6 s)."""
    from tests.builders import operation

    state = desired(*(component(f"c{i}", image=f"img{i}:1") for i in range(50)))
    op = await operation(engine, pub, state)
    first = op.feedback(StatusType.DOWNLOADING)
    op.actions[3].status = ActionStatusType.DOWNLOADING
    second = op.feedback(StatusType.DOWNLOADING)
    same = [a is b for a, b in zip(first.actions, second.actions, strict=True)]
    assert same == [i != 3 for i in range(50)]
    assert second.actions[3].status is ActionStatusType.DOWNLOADING


async def test_stop_during_an_operation_of_many_components_ends_it_at_once(
    engine: FakeEngine,
) -> None:
    """SIGTERM stays prompt with many components: the phase fails at the next action,
    INCOMPLETE follows, nothing else runs."""

    class Counting(RecordingPublisher):
        def __init__(self) -> None:
            super().__init__()
            self.fiftieth = asyncio.Event()

        async def publish_feedback(
            self,
            activity_id: str,
            feedback: DesiredStateFeedback,
            on_delivered: Delivered | None = None,
        ) -> None:
            await super().publish_feedback(activity_id, feedback, on_delivered)
            if len(self.messages) == 50:
                self.fiftieth.set()

    for index in range(300):
        engine.add_registry_image(f"img{index}:1")
    pub = Counting()
    manager, task = await run_manager(engine, pub)
    manager.submit_desired_state(
        "A", desired(*(component(f"c{i}", image=f"img{i}:1") for i in range(300)))
    )
    await asyncio.wait_for(pub.fiftieth.wait(), 30)
    sent = len(pub.messages)
    await asyncio.wait_for(manager.stop(), 5)
    await task
    statuses = pub.statuses("A")
    assert statuses[-2:] == ["DOWNLOAD_FAILURE", "INCOMPLETE"]
    assert len(statuses) <= sent + 10  # not the 300 DOWNLOADING messages still to come
