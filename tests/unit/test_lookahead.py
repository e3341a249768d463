"""Engine work run ahead of the phase loop: same feedback and device as one at a time;
the create of a new container and a leftover of an interrupted run."""

from __future__ import annotations

import asyncio

import pytest

from cua.containers.state import ContainerStatus
from cua.engine.base import NameConflictError
from cua.settings import UpdateSettings
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.lookahead import Lookahead
from cua.update.manager import UpdateManager
from tests.builders import add_managed, component, desired

pytestmark = pytest.mark.unit


async def test_errors_are_raised_in_order_and_exit_waits_for_started_work() -> None:
    finished: list[int] = []

    async def work(item: int) -> int:
        await asyncio.sleep(0.001 * (5 - item))  # later items finish first
        finished.append(item)
        if item in (1, 3):
            raise ValueError(f"item {item}")
        return item * 10

    items = [0, 1, 2, 3, 4]
    async with Lookahead(work, 3) as early:
        early.start(items)
        early.advance(0)
        assert await early.wait(0) == 0
        early.advance(1)  # items 1..4 now in flight
        with pytest.raises(ValueError, match="item 1"):
            await early.wait(1)
    # Leaving did not cancel the work started ahead: all of it ran to its end.
    assert sorted(finished) == items


async def test_refresh_starts_what_became_ready_in_the_window_only() -> None:
    started: list[str] = []
    ready: set[str] = set()

    async def work(item: str) -> None:
        started.append(item)

    async with Lookahead(work, 1, lambda item: item in ready) as early:
        early.refresh()  # before the loop started: nothing
        early.start(["a", "b", "c"])
        early.advance(0)
        await asyncio.sleep(0)
        assert started == []
        ready.update({"b", "c"})  # "c" is out of the window (a, b)
        early.refresh()
        await asyncio.sleep(0)
        assert started == ["b"]
    early.refresh()  # after leaving: nothing, no error
    assert started == ["b"]


async def test_work_that_is_not_ready_is_not_started_ahead() -> None:
    started: list[str] = []
    ready = {"a", "c"}

    async def work(item: str) -> None:
        started.append(item)

    async with Lookahead(work, 5, lambda item: item in ready) as early:
        early.start(["a", "b", "c"])
        early.advance(0)
        await asyncio.sleep(0)
        assert sorted(started) == ["a", "c"]
        await early.wait("b")  # run when the loop gets to it
    assert sorted(started) == ["a", "b", "c"]


async def _apply_mixed(parallel: int) -> tuple[list[dict[str, object]], dict[str, object]]:
    engine = FakeEngine()
    for image in ("img:1", "img:2", "bad:1"):
        engine.add_image(image)
    engine.fail_start("bad:1", 'exec: "/app/run": stat /app/run: no such file or directory')
    add_managed(engine, "keep", image="img:1")
    add_managed(engine, "stopped", image="img:1", running=False)
    add_managed(engine, "swap", image="img:1")
    pub = RecordingPublisher()
    settings = UpdateSettings(
        parallel_actions=parallel, stop_grace_period=0, activation_window=0.001
    )
    state = desired(
        component("new-a", image="img:1"),
        component("keep", image="img:1"),
        component("swap", image="img:2"),
        component("new-bad", image="bad:1"),
        component("stopped", image="img:1"),
        component("new-b", image="img:2"),
    )
    status = await UpdateManager(engine, pub, settings).apply("act", state)
    device: dict[str, object] = {
        c.name: (c.image, c.status) for c in await engine.list_containers()
    }
    return [*pub.wire("act"), {"final": str(status)}], device


async def test_parallel_actions_give_the_same_feedback_and_device_as_one_at_a_time() -> None:
    sequential = await _apply_mixed(1)
    parallel = await _apply_mixed(8)
    assert parallel == sequential
    feedback, device = parallel
    assert feedback[-1] == {"final": "INCOMPLETE"}  # the failed start was rolled back
    assert device == {
        "keep": ("img:1", ContainerStatus.RUNNING),
        "stopped": ("img:1", ContainerStatus.CREATED),
        "swap": ("img:1", ContainerStatus.RUNNING),
    }


async def test_a_name_conflict_at_create_removes_the_leftover_and_creates_again() -> None:
    engine = FakeEngine()
    engine.add_image("img:1")
    engine.fail_next("create_container", NameConflictError("web.cua-new is in use"))
    pub = RecordingPublisher()
    state = desired(component("web", image="img:1"))
    status = await UpdateManager(engine, pub, UpdateSettings(activation_window=0.001)).apply(
        "act", state
    )
    assert status == "COMPLETED"
    assert [c.method for c in engine.calls if c.method.endswith("_container")][:3] == [
        "create_container",
        "remove_container",
        "create_container",
    ]
    assert engine.container_names() == ["web"]
