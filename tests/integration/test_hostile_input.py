"""Hostile input against the running agent (`python -m cua run` on the real broker and
engine): a retained poison message does not take it down, and a bounded fuzz of 10,000
messages leaves no message with a readable activityId unanswered, no crash, a bounded RSS
and log, and the engine untouched."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from cua.api.envelope import go_json
from cua.engine.docker import DockerEngine
from cua_dev.stack import LocalStack
from tests.integration.test_agent import (
    FINAL,
    AgentProcess,
    Probe,
    agent_for,
    containers,
    probe_for,
)

pytestmark = pytest.mark.integration

HUGE = "9" * 5000
DEEP = "[" * 6000 + "]" * 6000


def envelope(activity_id: str, payload: Any) -> bytes:
    return go_json({"activityId": activity_id, "timestamp": 1, "payload": payload})


def one_component(domain: str, **config: str) -> dict[str, Any]:
    pairs = [{"key": k, "value": v} for k, v in config.items()]
    return {"domains": [{"id": domain, "components": [{"id": "app", "config": pairs}]}]}


def rss_peak_kib(agent: AgentProcess) -> int:
    for line in Path(f"/proc/{agent.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_a_retained_poison_message_does_not_stop_the_agent(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path
) -> None:
    """Numbers of 5,000 digits (a ValueError in parsing took the agent down, and being
    retained, again at every start), a NaN timestamp, JSON nested 6,000 deep."""
    before = await containers(engine)
    poison = one_component(
        "poison",
        image="x/../get?names=y",
        port=f"{HUGE}:80",
        logMaxFiles=HUGE,
        restartPolicy="on-failure",
        restartMaxRetries=HUGE,
    )
    async with probe_for(stack, "poison") as probe:
        topics = probe.topics
        retained = {
            topics.desired_state: envelope("poison-1", poison),
            topics.desired_state_command: (
                b'{"activityId":"poison-1","timestamp":NaN,"payload":{"command":"UPDATE"}}'
            ),
            topics.current_state_get: b'{"activityId":"poison-get","payload":'
            + DEEP.encode()
            + b"}",
        }
        for topic, payload in retained.items():
            probe.connection.publish(topic, payload, retain=True)
        try:
            for run in (1, 2):  # retained: the agent gets them again at every start
                with agent_for(stack, tmp_path / f"run-{run}", "poison") as agent:
                    messages = await probe.until("poison-1", FINAL)
                    assert messages[-1]["status"] == "IDENTIFICATION_FAILED"
                    assert (
                        "invalid configuration for container app: invalid image reference"
                        in (messages[-1]["message"])
                    )
                    await probe.state("poison-get")
                    await agent.wait_log(r"current state published")
                    assert agent.process.poll() is None
                probe.feedback.clear()
                probe.states.clear()
        finally:
            for topic in retained:
                probe.connection.publish(topic, b"", retain=True)  # clears the retained one
    assert await containers(engine) == before


# --- the fuzz ---------------------------------------------------------------------------------

DOMAIN = "fuzz"
MESSAGES = 10_000
MAX_MESSAGE_SIZE = 64 * 1024
IN_FLIGHT = 400  # unanswered messages at most: mosquitto queues 1,000 per client
STALL = 30.0  # seconds without any answer: the agent is stuck


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 4 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 2**70, 1.5, 1e300])
    if choice in (3, 4):
        return "".join(rng.choice('ab\n"\\/é\u2028<>:@-.') for _ in range(rng.randrange(12)))
    if choice in (5, 6):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["domains", "components", "config", "id", "key", "value", "image", "baselines"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


class Fuzz:
    """Messages of every hostile kind; what each one must get (or not) from the agent."""

    def __init__(self, probe: Probe, seed: int) -> None:
        self.rng = random.Random(seed)
        self.topics = probe.topics
        self.answered_feedback: set[str] = set()  # desired states: IDENTIFICATION_FAILED
        self.answered_state: set[str] = set()  # currentstate/get: a reply with the id

    def bad_desired_state(self, activity_id: str) -> bytes:
        rng = self.rng
        kind = rng.randrange(11)
        if kind == 0:
            stamp = rng.choice(["NaN", "Infinity", "-Infinity", "1e400", HUGE])
            return f'{{"activityId":{json.dumps(activity_id)},"timestamp":{stamp}}}'.encode()
        if kind == 1 and rng.random() < 0.1:
            return envelope(activity_id, None)[:-1] + b',"x":' + DEEP.encode() + b"}"
        if kind == 2:
            return envelope(activity_id, one_component("other-domain", image="app:1"))
        if kind == 3:
            image = rng.choice(["x/../get?names=y", "Upper", "a b", "", "a" * 300 + "/b", "-x"])
            return envelope(activity_id, one_component(DOMAIN, image=image))
        if kind == 4:
            key = rng.choice(["port", "logMaxFiles", "restartMaxRetries"])
            value = f"{HUGE}:1" if key == "port" else HUGE
            state = one_component(DOMAIN, image="Bad", restartPolicy="on-failure", **{key: value})
            return envelope(activity_id, state)
        if kind == 5 and rng.random() < 0.02:
            return envelope(activity_id, {"domains": [], "pad": "x" * MAX_MESSAGE_SIZE})
        if kind == 6:
            return envelope(activity_id, {"domains": [{"id": DOMAIN, "components": "app"}]})
        if kind == 7:
            components = [{"id": f"c{i}", "config": []} for i in range(1001)]
            return envelope(activity_id, {"domains": [{"id": DOMAIN, "components": components}]})
        payload = _random_json(rng)
        if isinstance(payload, dict) and "domains" in payload:
            payload["domains"] = 5  # never a valid desired state: nothing may be touched
        return envelope(activity_id, payload)

    def unreadable(self) -> bytes:
        rng = self.rng
        return rng.choice(
            [
                b"",
                b"\xff\xfe",
                b'{"activityId": "x", "payload": {',
                b'{"activityId": 5}',
                envelope("y" * 300, None),  # over max_activity_id_length
                b"[" * 20_000,
                bytes(rng.randrange(256) for _ in range(rng.randrange(64))),
                b'{"activityId": null, "payload": 1}',
            ]
        )

    def message(self, index: int) -> tuple[str, bytes, str | None, str]:
        """(topic, payload, the activityId that must be answered, how)."""
        rng = self.rng
        activity_id = f"fz-{index}" + rng.choice(["", "\nERROR forged line", "\u2028é", '"q'])
        roll = rng.random()
        if roll < 0.45:
            return self.topics.desired_state, self.bad_desired_state(activity_id), activity_id, "fb"
        if roll < 0.55:
            return self.topics.desired_state, self.unreadable(), None, ""
        if roll < 0.75:
            command = rng.choice(["DOWNLOAD", "UPDATE", "CLEANUP", "NOPE", 5, None])
            payload = {"command": command, "baseline": rng.choice(["", "*", 7])}
            raw = rng.choice([envelope(activity_id, payload), self.unreadable()])
            # No operation runs: Kanto (and we) ignore commands for unknown activities.
            return self.topics.desired_state_command, raw, None, ""
        if roll < 0.95:
            raw = rng.choice(
                [
                    envelope(activity_id, None),
                    envelope(activity_id, _random_json(rng)),
                    f'{{"activityId":{json.dumps(activity_id)},"timestamp":NaN}}'.encode(),
                ]
            )
            return self.topics.current_state_get, raw, activity_id, "state"
        return self.topics.current_state_get, self.unreadable(), None, ""


async def test_fuzz_10000_messages(engine: DockerEngine, stack: LocalStack, tmp_path: Path) -> None:
    before = await containers(engine)
    with agent_for(stack, tmp_path, DOMAIN, max_message_size=MAX_MESSAGE_SIZE) as agent:
        async with probe_for(stack, DOMAIN) as probe:
            await probe.state("initial")
            rss_start = rss_peak_kib(agent)
            fuzz = Fuzz(probe, seed=20261130)
            expected_feedback: set[str] = set()
            expected_state: set[str] = set()
            waiting: set[tuple[str, str]] = set()  # (how, activityId) not answered yet
            seen = {"fb": 0, "state": 0}  # how much of the probe's record was read

            def unanswered() -> int:
                for aid, _ in probe.feedback[seen["fb"] :]:
                    waiting.discard(("fb", aid))
                seen["fb"] = len(probe.feedback)
                for aid, _, _ in probe.states[seen["state"] :]:
                    waiting.discard(("state", aid))
                seen["state"] = len(probe.states)
                return len(waiting)

            progress = {"answers": 0, "at": time.monotonic()}

            async def wait_until(condition: Any) -> None:
                """Paced by the agent's answers; fails only when it stops answering."""
                while not condition():
                    answers = len(probe.feedback) + len(probe.states)
                    if answers != progress["answers"]:
                        progress.update(answers=answers, at=time.monotonic())
                    assert time.monotonic() - progress["at"] < STALL, "the agent stopped answering"
                    assert agent.process.poll() is None, agent.log()[-3000:]
                    await asyncio.sleep(0.005)

            for index in range(MESSAGES):
                topic, payload, activity_id, how = fuzz.message(index)
                if activity_id is not None:
                    (expected_feedback if how == "fb" else expected_state).add(activity_id)
                    waiting.add((how, activity_id))
                probe.send(topic, payload)
                await wait_until(
                    lambda: probe.connection.pending <= 200 and unanswered() <= IN_FLIGHT
                )
            await wait_until(lambda: unanswered() == 0)

            assert waiting == set()
            assert {aid for aid, _ in probe.feedback} == expected_feedback
            assert {aid for aid, _, _ in probe.states} >= expected_state
            # Only failures, one per desired state; nothing was identified or started.
            statuses = [(aid, payload.get("status")) for aid, payload in probe.feedback]
            assert {status for _, status in statuses} == {"IDENTIFICATION_FAILED"}
            assert len(statuses) == len(expected_feedback)
            assert agent.process.poll() is None
            rss_end = rss_peak_kib(agent)
    assert await containers(engine) == before
    log = agent.log()
    assert "Traceback" not in log
    # 10,000 bad messages once wrote 48 MB of log; repeated warnings are now summarised.
    assert len(log) < 3_000_000, len(log)
    assert not any(line.startswith("ERROR forged") for line in log.splitlines())
    # Bounded: the peak RSS does not grow with the number of messages.
    assert rss_end - rss_start < 100 * 1024, (rss_start, rss_end)
