"""The agent's message dispatch and systemd notification, without broker or engine."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from cua.agent import Agent, _readable_activity_id, initial_state_activity_id
from cua.api.envelope import go_json
from cua.config import Overrides, load_config
from cua.containers.state import ContainerSummary
from cua.mqtt import OutgoingKind
from cua.systemd import notify
from cua.testing.fake_engine import FakeEngine

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"activityId":"a","timestamp":1,"payload":null}', "a"),
        (
            b'{"activityId":"current-state-test-json","timestamp":1676332092}',
            "current-state-test-json",
        ),
        (b'{"activityId":"b","payload":{}}', "b"),
        (b"{}", ""),
        (b'{"activityId":null}', ""),
        (b"null", None),
        (b"[1]", None),
        (b"{", None),
        (b'{"activityId":5}', None),
        (b"\xff", None),
    ],
)
def test_current_state_request_activity_id(raw: bytes, expected: str | None) -> None:
    assert _readable_activity_id(raw, 256) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"activityId":"a","payload":' + b"[" * 5000 + b"]" * 5000 + b"}", "a"),
        (b'{"activityId":"a","timestamp":NaN}', "a"),
        (b'{"activityId":"a","timestamp":' + b"9" * 5000 + b"}", "a"),
        (b'{"activityId":"' + b"x" * 257 + b'"}', None),  # over the length limit
    ],
)
def test_current_state_request_activity_id_of_hostile_messages(
    raw: bytes, expected: str | None
) -> None:
    assert _readable_activity_id(raw, 256) == expected


def test_initial_activity_id_format() -> None:
    activity = initial_state_activity_id()
    assert activity.startswith("initial-current-state-")
    assert activity.removeprefix("initial-current-state-").isdigit()


async def make_agent() -> Agent:
    config = load_config(None, Overrides(domain="self-update"))
    return Agent(config, FakeEngine())


async def test_topics_follow_the_domain() -> None:
    agent = await make_agent()
    assert agent.topics.subscriptions == (
        "selfupdate/desiredstate",
        "selfupdate/desiredstate/command",
        "selfupdate/currentstate/get",
    )


async def test_current_state_request_is_queued_with_its_activity_id() -> None:
    agent = await make_agent()
    agent._on_message("selfupdate/currentstate/get", b'{"activityId":"x","payload":null}')
    agent._on_message("selfupdate/currentstate/get", b"not json")
    assert list(agent._state_pending) == ["x"]


async def test_invalid_desired_state_without_activity_id_only_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = await make_agent()
    agent._on_message("selfupdate/desiredstate", b"{oops")
    assert "without a readable activityId" in caplog.text
    assert agent.connection.pending == 0


@pytest.mark.parametrize(
    ("raw", "reported"),
    [
        (b'{"activityId":"a","payload":{"command":"DOWNLOAD","baseline":5}}', True),
        (b'{"activityId":"a","payload":{"command":"DO","baseline":5}}', False),  # unknown
        (b'{"payload":{"command":"DOWNLOAD","baseline":5}}', False),  # no activityId
        (b'{"activityId":"a","payload":', False),  # not JSON
    ],
)
async def test_undecodable_command_answered_only_when_id_and_name_are_readable(
    raw: bytes, reported: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await make_agent()
    seen: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        agent.manager,
        "report_invalid_command",
        lambda aid, command, message: seen.append((aid, command, message)),
    )
    agent._on_message("selfupdate/desiredstate/command", raw)
    if reported:
        assert seen == [
            (
                "a",
                "DOWNLOAD",
                "invalid desired state command: payload.baseline: Input should be a valid string",
            )
        ]
    else:
        assert seen == []


async def test_feedback_is_queued_as_feedback() -> None:
    from cua.api.models import DesiredStateFeedback, StatusType

    agent = await make_agent()
    await agent.publish_feedback("a", DesiredStateFeedback(status=StatusType.IDENTIFYING))
    [queued] = agent.connection._queue.messages()
    assert queued.topic == "selfupdate/desiredstatefeedback"
    assert (queued.qos, queued.retain, queued.kind) == (1, False, OutgoingKind.FEEDBACK)
    envelope = json.loads(queued.payload)
    assert envelope["activityId"] == "a"
    assert envelope["payload"] == {"status": "IDENTIFYING"}
    assert queued.payload.startswith(go_json({"activityId": "a"})[:-1])


def test_sd_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1") is True
        assert receiver.recv(64) == b"READY=1"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify("READY=1") is False


async def test_a_slow_current_state_reply_never_overwrites_a_newer_one() -> None:
    """The retained current state is the last one published: a reply computed before a
    container change must not be published after the state that shows the change."""
    import asyncio

    from cua.containers.labels import LABEL_DOMAIN, LABEL_MANAGED
    from cua.containers.spec import ContainerSpec

    agent = await make_agent()
    agent._debounce = 0.01
    engine = agent.engine
    assert isinstance(engine, FakeEngine)
    real = agent.state_reader.read
    gate = asyncio.Event()
    reading = asyncio.Event()
    calls = 0

    async def slow_first() -> Any:
        nonlocal calls
        calls += 1
        inventory = await real()
        if calls == 1:
            reading.set()
            await gate.wait()  # the request's engine reads finished before the change
        return inventory

    agent.state_reader.read = slow_first  # type: ignore[method-assign]
    tasks = [
        asyncio.create_task(agent._serve_state_requests()),
        asyncio.create_task(agent._publish_changes()),
    ]
    try:
        agent._on_message("selfupdate/currentstate/get", b'{"activityId":"x","payload":null}')
        await asyncio.wait_for(reading.wait(), 2)
        labels = {LABEL_MANAGED: "true", LABEL_DOMAIN: "self-update"}  # reported (ours)
        engine.add_container("app", ContainerSpec(name="app", image="img"), labels)
        agent._changed.set()
        await asyncio.sleep(0.1)  # the change is noticed while the reply is still built
        gate.set()
        deadline = asyncio.get_running_loop().time() + 2
        while asyncio.get_running_loop().time() < deadline:
            states = [m for m in agent.connection._queue.messages() if m.retain]
            if len(states) >= 2 and not agent._changed.is_set():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    states = [json.loads(m.payload) for m in agent.connection._queue.messages() if m.retain]
    last = states[-1]["payload"]["softwareNodes"]
    assert "self-update:app" in [node["id"] for node in last], states


async def test_ready_for_systemd_while_the_broker_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that is down is retried forever (D2); systemd must not wait for it (a
    `Type=notify` unit holds up boot and is killed after TimeoutStartSec)."""
    import asyncio

    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = load_config(None, Overrides(domain="ready", broker=f"tcp://127.0.0.1:{port}"))
    agent = Agent(config, FakeEngine())
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        stop = asyncio.Event()
        running = asyncio.create_task(agent.run(stop))
        try:
            loop = asyncio.get_running_loop()
            ready = await asyncio.wait_for(loop.sock_recv(receiver, 64), 5)
            assert ready == b"READY=1"
            assert not agent.connection.connected
        finally:
            stop.set()
            await asyncio.wait_for(running, 5)


def _published_states(agent: Agent) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in agent.connection._queue.messages() if m.retain]


def _statuses(state: dict[str, Any]) -> dict[str, str]:
    return {
        node["id"]: {kv["key"]: kv.get("value") for kv in node.get("parameters", [])}["status"]
        for node in state["payload"]["softwareNodes"]
        if node["id"].startswith("self-update:")
    }


async def test_engine_events_debounced_and_a_change_during_the_publish_not_lost() -> None:
    """D10: a burst of container events gives one current state (activityId ""); an event
    that arrives while that state is being built gives another one, with the change."""
    import asyncio

    from cua.containers.labels import LABEL_DOMAIN, LABEL_MANAGED
    from cua.containers.spec import ContainerSpec

    agent = await make_agent()
    agent._debounce = 0.05
    engine = agent.engine
    assert isinstance(engine, FakeEngine)
    labels = {LABEL_MANAGED: "true", LABEL_DOMAIN: "self-update"}  # reported (ours)
    ids = [engine.add_container(n, ContainerSpec(name=n, image="img"), labels) for n in "abc"]
    real = agent.state_reader.read
    calls = 0

    async def change_while_building() -> Any:
        nonlocal calls
        calls += 1
        inventory = await real()
        if calls == 1:
            await engine.start_container(ids[0])  # after the engine reads
        return inventory

    agent.state_reader.read = change_while_building  # type: ignore[method-assign]
    tasks = [
        asyncio.create_task(agent._watch_engine_events()),
        asyncio.create_task(agent._publish_changes()),
    ]
    try:
        await asyncio.sleep(0)  # the event stream is open
        for container in ids:
            engine.exit_container(container, exit_code=3)  # a burst: 3 events
        for _ in range(100):
            if len(_published_states(agent)) >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # nothing more comes
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    states = _published_states(agent)
    assert [s["activityId"] for s in states] == ["", ""]
    assert [_statuses(s) for s in states] == [
        {"self-update:a": "Exited", "self-update:b": "Exited", "self-update:c": "Exited"},
        {"self-update:a": "Running", "self-update:b": "Exited", "self-update:c": "Exited"},
    ]


async def test_pending_current_state_requests_share_one_engine_read() -> None:
    """3,000 requests: one engine listing, each activityId answered once with its own id."""
    import asyncio

    from cua.containers.spec import ContainerSpec

    agent = await make_agent()
    engine = agent.engine
    assert isinstance(engine, FakeEngine)
    for name in ("a", "b"):
        engine.add_container(name, ContainerSpec(name=name, image="img"))
    for index in range(3000):
        raw = go_json({"activityId": f"r-{index % 2000}", "payload": None})
        agent._on_message("selfupdate/currentstate/get", raw)
    before = engine.call_count("list_containers")
    task = asyncio.create_task(agent._serve_state_requests())
    try:
        for _ in range(200):
            if len(_published_states(agent)) >= 2000:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    states = _published_states(agent)
    assert [s["activityId"] for s in states] == [f"r-{i}" for i in range(2000)]
    assert engine.call_count("list_containers") - before == 1
    assert len({json.dumps(s["payload"]) for s in states}) == 1


async def test_an_error_while_handling_a_message_is_logged_and_answered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import cua.agent

    agent = await make_agent()
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(agent.manager, "report_invalid", lambda aid, msg: seen.append((aid, msg)))

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(cua.agent, "decode", broken)
    agent._on_message("selfupdate/desiredstate", b'{"activityId":"a","payload":null}')
    assert seen == [
        ("a", "internal error in the update agent (RuntimeError); the agent log has the details")
    ]
    assert "RuntimeError: injected" in caplog.text


async def test_an_activity_id_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from cua.logtext import SafeFormatter

    agent = await make_agent()
    forged = "x\n2026-01-01 00:00:00 ERROR cua.agent: forged"
    agent._on_message("selfupdate/desiredstate", go_json({"activityId": forged, "payload": 5}))
    lines = [SafeFormatter("%(message)s").format(record) for record in caplog.records]
    assert lines
    assert all("\n" not in line for line in lines)
    assert any('"x\\n2026-01-01 00:00:00 ERROR cua.agent: forged"' in line for line in lines)


async def test_unknown_keys_of_a_desired_state_reach_the_identified_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = await make_agent()
    payload = {
        "domains": [{"id": "self-update", "components": [], "confg": []}],
        "baseline": [],
    }
    message = {"activityId": "a-1", "timestamp": 1, "payload": payload}
    agent._on_message("selfupdate/desiredstate", go_json(message))
    item = agent.manager._inbox.get_nowait()
    assert item is not None
    assert item.unknown_keys == (  # type: ignore[union-attr]
        'payload: unknown key "baseline" ignored (did you mean "baselines"?)',
        'payload.domains[0]: unknown key "confg" ignored (did you mean "config"?)',
    )
    assert '[a-1] payload: unknown key "baseline" ignored' in caplog.text


async def test_every_failure_status_logs_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    from cua.api.models import Action, ActionStatusType, Component, DesiredStateFeedback
    from cua.api.models import StatusType as S

    agent = await make_agent()
    failed_action = Action(
        component=Component(id="self-update:web", version="1"),
        status=ActionStatusType.ACTIVATION_FAILURE,
        message="cannot start container web: no such device",
    )
    ok_action = Action(
        component=Component(id="self-update:db", version="1"),
        status=ActionStatusType.ACTIVATION_SUCCESS,
        message="fine",
    )
    with caplog.at_level(logging.INFO):
        await agent.publish_feedback("a", DesiredStateFeedback(status=S.IDENTIFYING))
        await agent.publish_feedback(
            "a", DesiredStateFeedback(status=S.IDENTIFICATION_FAILED, message="domain id mismatch")
        )
        await agent.publish_feedback(
            "b",
            DesiredStateFeedback(status=S.ACTIVATION_FAILURE, actions=[ok_action, failed_action]),
        )
        await agent.publish_feedback(
            "c",
            DesiredStateFeedback(
                status=S.INCOMPLETE, message="stopped by SIGTERM: the operation was interrupted"
            ),
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "[a] feedback IDENTIFICATION_FAILED: domain id mismatch",
        "[b] feedback ACTIVATION_FAILURE: self-update:web: cannot start container web: "
        "no such device",
        "[c] feedback INCOMPLETE: stopped by SIGTERM: the operation was interrupted",
    ]
    assert "[a] feedback IDENTIFYING" in caplog.text


@pytest.mark.parametrize("age", [0.0, 10.0])
async def test_the_first_current_state_uses_the_engine_read_made_at_start_when_young(
    age: float,
) -> None:
    """`run` reads the engine at once, while connecting: the first connect's current state
    is that read (no second read) when it is young, then checked once more for a change
    made meanwhile; an old one (the broker came late) is read again."""
    import asyncio

    from cua.containers.labels import LABEL_DOMAIN, LABEL_MANAGED
    from cua.containers.spec import ContainerSpec
    from cua.current_state import EarlyRead

    agent = await make_agent()
    engine = agent.engine
    assert isinstance(engine, FakeEngine)
    labels = {LABEL_MANAGED: "true", LABEL_DOMAIN: "self-update"}  # reported (ours)
    engine.add_container("a", ContainerSpec(name="a", image="img"), labels)
    async with asyncio.TaskGroup() as group:
        early = EarlyRead(agent.state_reader, group)
    early.started -= age
    agent._early_read = early
    engine.add_container("b", ContainerSpec(name="b", image="img"), labels)  # before connect
    before = engine.call_count("list_containers")
    agent._request_state("initial-current-state-1")
    task = asyncio.create_task(agent._serve_state_requests())
    try:
        for _ in range(200):
            if _published_states(agent):
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [state] = _published_states(agent)
    shown = {n["id"] for n in state["payload"]["softwareNodes"][1:]}
    if age == 0.0:
        assert shown == {"self-update:a"}
        assert engine.call_count("list_containers") == before
        assert agent._changed.is_set()  # the debounced check publishes "b" if it is new
    else:
        assert shown == {"self-update:a", "self-update:b"}
        assert engine.call_count("list_containers") == before + 1
    assert await early.take() is None  # used once


async def test_the_update_manager_starts_once_the_first_current_state_is_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Importing the update machinery and crash recovery wait for the first current state's
    PUBACK (they must not delay it); a stop before that never starts the manager."""
    import asyncio

    from cua.api.models import Inventory

    agent = await make_agent()
    started: list[str] = []

    async def run() -> None:
        started.append("run")

    monkeypatch.setattr(agent.manager, "run", run)
    task = asyncio.create_task(agent._run_manager())
    agent._publish_state(["initial-current-state-1"], Inventory())
    await asyncio.sleep(0.05)
    assert started == []  # published, not yet acknowledged
    [message] = agent.connection._queue.messages()
    assert message.on_delivered is not None
    message.on_delivered()  # the broker's PUBACK
    await asyncio.wait_for(task, 1)
    assert started == ["run"]

    agent = await make_agent()
    task = asyncio.create_task(agent._run_manager())
    await asyncio.sleep(0.01)
    agent._accepting = False  # as `run` does when stopping
    agent._manager_may_start.set()
    await asyncio.wait_for(task, 1)
    assert "manager" not in agent.__dict__  # never made


async def test_cua_run_reads_the_engine_while_the_agent_modules_are_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Start-up: `cua run` starts the first current state's engine read, then imports the
    MQTT side and the agent in a thread; the event loop makes the read meanwhile. Had the
    import blocked the loop, the engine would not be listed before the import ends."""
    import threading

    from cua import cli
    from cua.current_state import EarlyRead

    listed = threading.Event()

    class ListingEngine(FakeEngine):
        async def list_containers(self) -> list[ContainerSummary]:
            listed.set()
            return await super().list_containers()

    seen: dict[str, object] = {}

    class RecordingAgent:
        def __init__(self, config: object, engine: object, **kwargs: object) -> None:
            seen.update(kwargs)
            self.stop_reason = ""

        async def run(self, stop: asyncio.Event) -> None:
            early = seen["early_read"]
            assert isinstance(early, EarlyRead)
            seen["inventory"] = await early.take()

    def import_agent() -> tuple[object, object]:
        seen["listed during import"] = listed.wait(timeout=10)
        return RecordingAgent, lambda state_dir, domain: None

    config = load_config(None, Overrides(domain="self-update"))
    monkeypatch.setattr(cli, "_make_engine", lambda config: ListingEngine())
    monkeypatch.setattr(cli, "_import_agent", import_agent)
    assert await cli._run_agent(config, Path("/nonexistent")) == cli.EXIT_OK
    assert seen["listed during import"] is True
    assert seen["inventory"] is not None  # the early read, handed to the agent
