"""Kill at every feedback (our-behaviour "After a crash"): the agent (`python -m cua run`) is
SIGKILLed right after each feedback message of one update, then started again. The update
RECREATEs `web`, DESTROYs `slow` (it ignores SIGTERM, so its stop takes the whole stop
timeout and the engine is still carrying it out when the agent dies) and ADDs `fresh`.

After each restart the device is exactly in its old or its new state, every container
running, no container in flight left; the activity has its final status (INCOMPLETE saying
the agent restarted, unless it had ended before the kill); in orchestrated mode the command
the update manager sends next gets its failure with the same reason.

One agent start per kill point: the restarted agent serves the next kill point.

One more kill point is made deterministic by freezing the broker: the operation ends while
the broker acknowledges nothing, and the agent is killed with its final status queued. The
restarted agent publishes that final status (again, if the first copy got through: at
least once) and restores nothing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cua.api.models import DesiredState
from cua.containers.state import ContainerStatus
from cua.engine.base import ensure_image
from cua.engine.docker import DockerEngine
from cua.settings import UpdateSettings
from cua.testing.feedback import RecordingPublisher
from cua.update.manager import UpdateManager
from cua_dev.stack import LocalStack
from tests.builders import component
from tests.integration.test_agent import WAIT, AgentProcess, Probe, desired_state, probe_for

pytestmark = pytest.mark.integration

RESTARTED = "the agent restarted during this operation"
# The update manager's next command after each overall status (Kanto's flow, spec §6.2).
NEXT = {
    "IDENTIFIED": "DOWNLOAD",
    "DOWNLOAD_SUCCESS": "UPDATE",
    "UPDATE_SUCCESS": "ACTIVATE",
    "ACTIVATION_SUCCESS": "CLEANUP",
}
FAILURE = {
    "DOWNLOAD": "DOWNLOAD_FAILURE",
    "UPDATE": "UPDATE_FAILURE",
    "ACTIVATE": "ACTIVATION_FAILURE",
    "CLEANUP": "CLEANUP_FAILURE",
}
# Feedback of the uninterrupted update: IDENTIFYING, IDENTIFIED, DOWNLOADING x2, DOWNLOAD_
# SUCCESS, UPDATING x2, UPDATE_SUCCESS, ACTIVATING x2, ACTIVATION_SUCCESS, CLEANUP_SUCCESS,
# COMPLETED (the images are pulled before: no progress-only DOWNLOADING).
MESSAGES = 13
# (message, delay): killed `delay` seconds after that message. Right after the second
# UPDATING the stop of `slow` is about to be asked; half a second later the engine is
# carrying it out (the agent that dies there has a stop timeout longer than a restart).
KILL_POINTS = [(n, 0.0) for n in range(1, MESSAGES + 1)]
SLOW_STOP = 7
KILL_POINTS.insert(SLOW_STOP, (SLOW_STOP, 0.5))


class Device:
    """The containers of one domain: the old state is set up before each kill point."""

    def __init__(self, engine: DockerEngine, domain: str, images: dict[str, str]) -> None:
        self.engine = engine
        self.domain = domain
        self.old = desired_state(
            domain,
            component("web", image=images["v1"]),
            component("slow", image=images["slow"]),
        )
        self.new = desired_state(
            domain,
            component("web", image=images["v2"]),
            component("fresh", image=images["v1"]),
        )
        self.images = images
        self.ids: dict[str, str] = {}

    async def reset(self) -> None:
        for container in await self.engine.list_containers():
            await self.engine.remove_container(container.id)
        settings = UpdateSettings(domain=self.domain, stop_grace_period=0, activation_window=0.5)
        setup = UpdateManager(self.engine, RecordingPublisher(), settings)
        assert await setup.apply("setup", DesiredState.model_validate(self.old)) == "COMPLETED"
        # The new image is there: DOWNLOAD has no progress-only messages.
        async for _ in ensure_image(self.engine, self.images["v2"]):
            pass
        self.ids = {c.name: c.id for c in await self.engine.list_containers()}

    async def state(self) -> str:
        """ "old" or "new"; anything else fails with what is there."""
        found = {c.name: (c.id, c.status, c.image) for c in await self.engine.list_containers()}
        running = {name: status for name, (_, status, _) in found.items()}
        assert set(running.values()) == {ContainerStatus.RUNNING}, found
        if set(found) == {"web", "slow"}:
            assert found["web"][0] == self.ids["web"], "old web put back, not re-created"
            assert found["slow"][0] == self.ids["slow"]
            assert found["web"][2] == self.images["v1"]
            return "old"
        assert set(found) == {"web", "fresh"}, found
        assert found["web"][2] == self.images["v2"], found
        return "new"


def stop_timeout(point: int) -> int:
    """Of the agent that serves KILL_POINTS[point]. The one killed while it stops `slow`
    has one longer than a restart takes, so that the engine is still carrying out that
    stop when the next agent recovers (as with Kanto's default of 30 s)."""
    return 6 if KILL_POINTS[point : point + 1] == [(SLOW_STOP, 0.5)] else 1


def start(stack: LocalStack, work: Path, domain: str, mode: str, point: int) -> AgentProcess:
    config = {
        "update_agent": {
            "domain": domain,
            "mode": mode,
            "engine": stack.docker_host,
            "stop_timeout": f"{stop_timeout(point)}s",
            "activation_window": "500ms",  # short: the default 3s would slow the suite
            "state_dir": str(work / "state"),
        },
        "connection": {"broker_url": stack.broker_url},
    }
    return AgentProcess(work / f"agent-{point}", config)


async def connected(probe: Probe, agents: int) -> None:
    """Each agent publishes its initial current state once subscribed."""
    deadline = time.monotonic() + WAIT
    while len({a for a, _, _ in probe.states if a.startswith("initial-current-state-")}) < agents:
        assert time.monotonic() < deadline, "the agent did not connect"
        await asyncio.sleep(0.01)


async def run_until(probe: Probe, activity: str, mode: str, kill_at: int) -> list[dict[str, Any]]:
    """Publish the desired state (and, orchestrated, each next command as the update
    manager does) until the `kill_at`-th feedback message; returns the messages seen."""
    deadline = time.monotonic() + WAIT
    seen = 0
    while True:
        messages = probe.of(activity)
        while seen < len(messages):
            message = messages[seen]
            seen += 1
            if seen == kill_at:
                return messages[:seen]
            if mode == "orchestrated" and message["status"] in NEXT:
                probe.command(activity, NEXT[message["status"]])
        if messages and messages[-1]["status"] in ("COMPLETED", "INCOMPLETE"):
            return messages
        assert time.monotonic() < deadline, messages
        await asyncio.sleep(0.005)


async def wait_for(probe: Probe, activity: str, after: int, *statuses: str) -> dict[str, Any]:
    """The first message after the `after` first ones with one of `statuses`."""
    deadline = time.monotonic() + WAIT
    while True:
        for message in probe.of(activity)[after:]:
            if message["status"] in statuses:
                return message
        assert time.monotonic() < deadline, (activity, statuses, probe.of(activity))
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("mode", ["standalone", "orchestrated"])
async def test_killed_after_every_feedback_message_the_device_is_old_or_new_and_running(
    engine: DockerEngine,
    stack: LocalStack,
    tmp_path: Path,
    app_images: dict[str, str],
    mode: str,
) -> None:
    domain = f"kill-{mode}"
    device = Device(engine, domain, app_images)
    agents: list[AgentProcess] = []
    outcomes: list[tuple[int, str, str]] = []
    async with probe_for(stack, domain) as probe:
        agents.append(start(stack, tmp_path, domain, mode, 0))
        try:
            for point, (kill_at, delay) in enumerate(KILL_POINTS):
                # The agent started after the last kill recovers at its start (a `.cua-new`
                # of its domain is removed): it must be done before `reset` creates the old
                # state's containers (when the killed agent had published COMPLETED,
                # nothing above waited for the new one). Its update manager answers a bad
                # desired state only once its recovery is done.
                await connected(probe, len(agents))
                probe.desired(f"recovered-{point}", {"domains": 5})
                await wait_for(probe, f"recovered-{point}", 0, "IDENTIFICATION_FAILED")
                await device.reset()
                await connected(probe, len(agents))
                activity = f"k-{point}"
                probe.desired(activity, device.new)
                seen = await run_until(probe, activity, mode, kill_at)
                await asyncio.sleep(delay)
                agents[-1].process.kill()  # SIGKILL: no clean-up of any kind
                agents[-1].process.wait()
                killed = time.monotonic()
                agents.append(start(stack, tmp_path, domain, mode, point + 1))
                last = seen[-1]["status"]
                context = f"killed {delay} s after message {kill_at} ({last})"
                final = "COMPLETED"
                if last != "COMPLETED":
                    # (The killed agent may have published its end just before it died.)
                    answer = await wait_for(probe, activity, len(seen), "INCOMPLETE", "COMPLETED")
                    final = answer["status"]
                if final == "INCOMPLETE":
                    assert answer["message"].startswith(RESTARTED), context
                    if mode == "orchestrated":
                        command = NEXT.get(last, "CLEANUP")
                        await connected(probe, len(agents))  # subscribed: it hears commands
                        before = len(probe.of(activity))
                        probe.command(activity, command)
                        failure = await wait_for(probe, activity, before, FAILURE[command])
                        assert failure["message"] == answer["message"], context
                if last == "UPDATING":
                    # A stop the dead agent asked for may still be under way in the engine:
                    # the end state is the one after it ended.
                    await asyncio.sleep(killed + stop_timeout(point) + 1.0 - time.monotonic())
                state = await device.state()
                outcomes.append((kill_at, last, state))
                if final == "COMPLETED":
                    assert state == "new", context
        finally:
            for agent in agents:
                agent.stop()
    for agent in agents:
        assert "Traceback" not in agent.log(), agent.log()[-3000:]
    # Killed before CLEANUP committed: the old state; after COMPLETED: the new one.
    assert outcomes[0][2] == "old"
    assert outcomes[-1] == (MESSAGES, "COMPLETED", "new"), outcomes


async def test_killed_before_the_broker_acknowledged_the_final_status_it_is_published_again(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    domain = "kill-unacknowledged"
    device = Device(engine, domain, app_images)
    await device.reset()
    activity = "k-unacknowledged"
    async with probe_for(stack, domain) as probe:
        killed = start(stack, tmp_path, domain, "standalone", 0)
        restarted: AgentProcess | None = None
        try:
            await connected(probe, 1)
            probe.desired(activity, device.new)
            await wait_for(probe, activity, 0, "IDENTIFIED")
            with stack.mosquitto_frozen():
                # The whole update runs; from here on no feedback is acknowledged.
                await killed.wait_log(rf"\[{activity}\] feedback COMPLETED")
                killed.process.kill()
                killed.process.wait()
            assert await device.state() == "new"
            restarted = start(stack, tmp_path, domain, "standalone", 1)
            final = await wait_for(probe, activity, 0, "COMPLETED", "INCOMPLETE")
            assert final == {"status": "COMPLETED"}, probe.of(activity)
            await restarted.wait_log(rf"\[{activity}\] feedback COMPLETED")
            assert await device.state() == "new"  # nothing undone: the update was final
            deadline = time.monotonic() + WAIT  # closed once the broker acknowledged it
            while list((tmp_path / "state").glob("journal-*")):
                assert time.monotonic() < deadline, "the journal was not closed"
                await asyncio.sleep(0.05)
        finally:
            killed.stop()
            if restarted is not None:
                restarted.stop()
    for agent in (killed, restarted):
        assert agent is not None
        assert "Traceback" not in agent.log(), agent.log()[-3000:]
