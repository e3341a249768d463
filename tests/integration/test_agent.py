"""The agent as people run it: `python -m cua run` as a subprocess, on the real mosquitto,
dockerd and registry of the local stack. Each test uses its own domain (its own topics), so
retained current states of other tests never interfere."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cua.api.envelope import go_json, now_ms
from cua.api.models import ComponentWithConfig, DesiredState
from cua.api.topics import Topics
from cua.broker import MqttOptions, parse_broker_url
from cua.containers.parse import parse_component
from cua.containers.state import ContainerStatus
from cua.engine.base import ensure_image
from cua.engine.docker import DockerEngine
from cua.mqtt import MqttConnection
from cua.settings import UpdateSettings
from cua.testing.feedback import RecordingPublisher, collapse_progress
from cua.update.manager import UpdateManager
from cua_dev.demo import leda_standin, rewrite_mounts
from cua_dev.images import ImageFactory
from cua_dev.processes import stop_pid
from cua_dev.stack import LocalStack
from cua_dev.unixhttp import docker_exec, engine_json
from tests.builders import (
    NOTHING_TO_DO,
    component,
    desired,
    standalone_statuses,
)
from tests.builders import until as until_true

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples"
FINAL = {"COMPLETED", "INCOMPLETE", "IDENTIFICATION_FAILED"}
WAIT = 30.0

# --- harness --------------------------------------------------------------------------------


class AgentProcess:
    """`python -m cua run --config FILE ...`, its log in a file."""

    def __init__(
        self, work: Path, config: dict[str, Any], *args: str, env: dict[str, str] | None = None
    ) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.config_path = work / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = work / "agent.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cua", "run", "--config", str(self.config_path), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(
        self, pattern: str, count: int = 1, wait: float = WAIT
    ) -> list[re.Match[str]]:
        deadline = time.monotonic() + wait
        while True:
            matches = list(re.finditer(pattern, self.log()))
            if len(matches) >= count:
                return matches
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} x{count} in agent log:\n{self.log()[-3000:]}")
            if self.process.poll() is not None:
                raise AssertionError(
                    f"agent exited {self.process.returncode}:\n{self.log()[-3000:]}"
                )
            await asyncio.sleep(0.05)

    def stop(self) -> int | None:
        stop_pid(self.process.pid, timeout=30, proc=self.process)
        self._log.close()
        return self.process.returncode


class Probe:
    """The other side of the broker (a backend / update manager): publishes requests and
    records what the agent publishes, reconnecting quickly when the broker restarts."""

    def __init__(self, stack: LocalStack, domain: str) -> None:
        self.topics = Topics.for_domain(domain)
        self.feedback: list[tuple[str, dict[str, Any]]] = []
        self.raw_feedback: list[tuple[str, bytes]] = []  # the bytes as they came
        self.states: list[tuple[str, dict[str, Any], bytes]] = []
        self.connection = MqttConnection(
            MqttOptions(
                broker=parse_broker_url(stack.broker_url),
                backoff_initial=0.02,
                backoff_max=0.05,
            ),
            [self.topics.desired_state_feedback, self.topics.current_state],
            on_message=self._on_message,
        )

    def _on_message(self, topic: str, payload: bytes) -> None:
        data = json.loads(payload)
        if topic == self.topics.desired_state_feedback:
            self.feedback.append((data["activityId"], data["payload"]))
            self.raw_feedback.append((data["activityId"], payload))
        else:
            self.states.append((data["activityId"], data["payload"], payload))

    def send(self, topic: str, message: bytes | dict[str, Any]) -> None:
        payload = message if isinstance(message, bytes) else go_json(message)
        self.connection.publish(topic, payload)

    def desired(self, activity_id: str, payload: dict[str, Any]) -> None:
        self.send(
            self.topics.desired_state,
            {"activityId": activity_id, "timestamp": now_ms(), "payload": payload},
        )

    def command(self, activity_id: str, command: str) -> None:
        self.send(
            self.topics.desired_state_command,
            {"activityId": activity_id, "timestamp": now_ms(), "payload": {"command": command}},
        )

    def of(self, activity_id: str) -> list[dict[str, Any]]:
        return [payload for aid, payload in self.feedback if aid == activity_id]

    async def until(
        self, activity_id: str, statuses: set[str], wait: float = WAIT
    ) -> list[dict[str, Any]]:
        """The feedback of `activity_id` up to the first overall message with a status in
        `statuses` (no baseline), progress-only DOWNLOADING messages collapsed."""
        deadline = time.monotonic() + wait
        while True:
            messages = self.of(activity_id)
            for index, message in enumerate(messages):
                if message.get("status") in statuses:
                    return collapse_progress(messages[: index + 1])
            if time.monotonic() > deadline:
                raise AssertionError(f"no {statuses} for {activity_id}; got {messages}")
            await asyncio.sleep(0.02)

    async def state(self, activity_id: str | None = None, wait: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + wait
        while True:
            for aid, payload, _raw in reversed(self.states):
                if (
                    activity_id is None
                    or aid == activity_id
                    or (activity_id == "initial" and aid.startswith("initial-current-state-"))
                ):
                    return payload
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no current state {activity_id!r}; got {[a for a, _, _ in self.states]}"
                )
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def probe_for(stack: LocalStack, domain: str) -> AsyncIterator[Probe]:
    probe = Probe(stack, domain)
    async with asyncio.TaskGroup() as group:
        group.create_task(probe.connection.run())
        await asyncio.wait_for(probe.connection.wait_connected(), 10)
        try:
            yield probe
        finally:
            await probe.connection.stop(2.0)


@contextlib.contextmanager
def agent_for(
    stack: LocalStack, tmp_path: Path, domain: str, **update_agent: Any
) -> Iterator[AgentProcess]:
    connection = update_agent.pop("connection", {"broker_url": stack.broker_url})
    env = update_agent.pop("env", None)
    config = {
        "update_agent": {
            "enable": True,
            "domain": domain,
            "engine": stack.docker_host,
            "registry_mirrors": {"ghcr.io": stack.registry},
            # The stack's registry is in its network namespace, which an agent process's
            # own downloads do not reach: these tests have the engine pull (the agent's
            # downloads are test_agent_download's, through a proxy into that namespace).
            "download": "engine",
            "stop_timeout": "2s",
            "activation_window": "500ms",  # short: the default 3s would slow the suite
            "state_dir": str(tmp_path / "state"),  # the operation journal
            **update_agent,
        },
        "connection": connection,
    }
    agent = AgentProcess(tmp_path / "agent", config, env=env)
    try:
        yield agent
    finally:
        code = agent.stop()
        assert code == 0, agent.log()[-3000:]
        assert "Traceback" not in agent.log(), agent.log()[-3000:]


async def containers(engine: DockerEngine) -> dict[str, tuple[str, ContainerStatus, str]]:
    """name -> (id, status, image)"""
    return {c.name: (c.id, c.status, c.image) for c in await engine.list_containers()}


def statuses(messages: list[dict[str, Any]]) -> list[str]:
    return [m["status"] for m in messages]


def desired_state(domain: str, *components: ComponentWithConfig) -> dict[str, Any]:
    """The desired state as the JSON payload a backend publishes."""
    return desired(*components, domain=domain).to_wire()


# --- standalone: Leda, a change, an empty desired state ------------------------------------


@pytest.fixture(scope="module")
def leda_images(image_factory: ImageFactory) -> dict[str, str]:
    envelope = json.loads((EXAMPLES / "leda-desired-state.json").read_text())
    made = {}
    for comp in envelope["payload"]["domains"][0]["components"]:
        image = next(e["value"] for e in comp["config"] if e["key"] == "image")
        path, _, tag = image.removeprefix("ghcr.io/").rpartition(":")
        made[comp["id"]] = image_factory(path, tag, spec=leda_standin(comp["id"], tag))
    image_factory("eclipse/kuksa.val/databroker", "0.4.0", spec=leda_standin("databroker", "0.4.0"))
    return made


def leda_envelope(tmp_path: Path) -> dict[str, Any]:
    """Leda's file, with cloudconnector's absolute mount sources made real under tmp_path."""
    envelope: dict[str, Any] = json.loads((EXAMPLES / "leda-desired-state.json").read_text())
    rewrite_mounts(envelope, tmp_path / "host")
    return envelope


LEDA_NAMES = [
    "databroker",
    "feedercan",
    "hvacservice-example",
    "seatservice-example",
    "cloudconnector",
]


LEDA_APPS = ("feedercan", "hvacservice-example", "seatservice-example")


def in_container(stack: LocalStack, container: str, *argv: str) -> str:
    """`docker exec`: the output of `argv` run inside `container` (it must succeed)."""
    code, output = docker_exec(stack.docker_host, container, list(argv))
    assert code == 0, (container, argv, code, output)
    return output


def hosts_entry(stack: LocalStack, container: str, name: str) -> str:
    """The address `name` has in the container's /etc/hosts."""
    for line in in_container(stack, container, "cat", "/etc/hosts").splitlines():
        fields = line.split()
        if len(fields) >= 2 and name in fields[1:]:
            return fields[0]
    raise AssertionError(f"no {name} in {container}'s /etc/hosts")


async def test_leda_apps_reach_databroker_by_name_also_after_it_is_recreated(
    clean_engine: LocalStack, tmp_path: Path, leda_images: dict[str, str]
) -> None:
    """Real networking in the stack's namespace: `databroker:container_databroker-host` is
    resolved when each app starts, and follows databroker when it is re-created."""
    stack = clean_engine
    engine = DockerEngine(stack.docker_host, mirrors={"ghcr.io": stack.registry}, timeout=30)
    settings = UpdateSettings(activation_window=0.5, stop_grace_period=2)
    envelope = leda_envelope(tmp_path)
    pub = RecordingPublisher()
    try:
        manager = UpdateManager(engine, pub, settings)
        desired = DesiredState.model_validate(envelope["payload"])
        assert await manager.apply("leda", desired) == "COMPLETED"
        activated = next(m for m in pub.wire("leda") if m["status"] == "ACTIVATION_SUCCESS")
        assert {a["message"] for a in activated["actions"]} == {
            "New container instance is started."  # Kanto's bytes: nothing left out
        }
        broker = (await engine.inspect_container("databroker")).address
        assert broker
        for app in LEDA_APPS:
            assert hosts_entry(stack, app, "databroker") == broker
        reply = in_container(stack, "feedercan", "wget", "-qO-", "http://databroker:55555/marker")
        assert reply == "databroker 0.3.0"
        # `mosquitto:host_ip`: the host's address on the container network (its gateway).
        raw = engine_json(stack.docker_host, "GET", "/containers/cloudconnector/json")
        assert (
            hosts_entry(stack, "cloudconnector", "mosquitto") == raw["NetworkSettings"]["Gateway"]
        )

        # databroker 0.3.0 -> 0.4.0: a new container; the apps follow it (beyond Kanto).
        broker_component = envelope["payload"]["domains"][0]["components"][0]
        broker_component["version"] = "0.4.0"
        for entry in broker_component["config"]:
            if entry["key"] == "image":
                entry["value"] = "ghcr.io/eclipse/kuksa.val/databroker:0.4.0"
        desired = DesiredState.model_validate(envelope["payload"])
        assert await manager.apply("v2", desired) == "COMPLETED"
        broker = (await engine.inspect_container("databroker")).address
        for app in LEDA_APPS:
            assert hosts_entry(stack, app, "databroker") == broker
            reply = in_container(stack, app, "wget", "-qO-", "http://databroker:55555/marker")
            assert reply == "databroker 0.4.0", app
        activated = next(m for m in pub.wire("v2") if m["status"] == "ACTIVATION_SUCCESS")
        assert [a["message"] for a in activated["actions"][1:4]] == [
            "Existing container instance is running."  # Kanto's bytes for the checked apps
        ] * 3
        assert sorted(c.name for c in await engine.list_containers()) == sorted(LEDA_NAMES)
    finally:
        await engine.close()


async def test_standalone_leda_change_and_empty(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, leda_images: dict[str, str]
) -> None:
    # `sua` was deployed by someone else and is a system container (Leda's config).
    sua = parse_component(component("sua", "1", image=leda_images["databroker"])).spec
    async for _ in ensure_image(engine, sua.image):
        pass
    sua_id = await engine.create_container("sua", sua, {})
    await engine.start_container(sua_id)
    envelope = leda_envelope(tmp_path)
    with agent_for(stack, tmp_path, "containers", manage="all", system_containers=["sua"]) as agent:
        async with probe_for(stack, "containers") as probe:
            initial = await probe.state("initial")
            assert initial["softwareNodes"][0]["id"] == "containers-update-agent"
            # Exactly as the Kanto docs say: mosquitto_pub -t containersupdate/desiredstate -f
            path = tmp_path / "leda-desired-state.json"
            path.write_bytes(go_json(envelope))
            pub = await asyncio.create_subprocess_exec(
                *("mosquitto_pub", "-h", "127.0.0.1", "-p", str(stack.mqtt_port), "-q", "1"),
                *("-t", "containersupdate/desiredstate", "-f", str(path)),
            )
            assert await asyncio.wait_for(pub.wait(), 10) == 0
            messages = await probe.until("activity-id-leda-containers", FINAL)
            assert statuses(messages) == standalone_statuses(downloading=5, activating=5)
            identified = messages[1]
            assert [a["component"]["id"] for a in identified["actions"]] == [
                f"containers:{n}" for n in LEDA_NAMES
            ]
            assert {a["message"] for a in identified["actions"]} == {
                "New container will be created and started."
            }
            assert all(a["status"] == "ACTIVATION_SUCCESS" for a in messages[-1]["actions"])
            now = await containers(engine)
            assert set(now) == {*LEDA_NAMES, "sua"}
            assert all(status is ContainerStatus.RUNNING for _, status, _ in now.values())
            assert now["databroker"][2] == "ghcr.io/eclipse/kuksa.val/databroker:0.3.0"

            # The change reaches the retained current state by itself (D10, activityId "").
            changed = await probe.state("")
            assert {n["id"] for n in changed["softwareNodes"]} >= {
                f"containers:{n}" for n in LEDA_NAMES
            }

            # A change: databroker 0.3.0 -> 0.4.0 (RECREATE); the others are checked only.
            payload = envelope["payload"]
            broker = payload["domains"][0]["components"][0]
            broker["version"] = "0.4.0"
            for entry in broker["config"]:
                if entry["key"] == "image":
                    entry["value"] = "ghcr.io/eclipse/kuksa.val/databroker:0.4.0"
            probe.desired("change", payload)
            messages = await probe.until("change", FINAL)
            assert messages[-1]["status"] == "COMPLETED"
            kinds = {a["component"]["id"]: a["message"] for a in messages[1]["actions"]}
            assert (
                kinds["containers:databroker"]
                == "Existing container will be destroyed and replaced by a new one."
            )
            assert kinds["containers:feedercan"].startswith("No changes detected")
            after = await containers(engine)
            assert after["databroker"][2] == "ghcr.io/eclipse/kuksa.val/databroker:0.4.0"
            assert after["databroker"][0] != now["databroker"][0]
            assert after["feedercan"][0] == now["feedercan"][0]

            # Empty: everything goes except the system container.
            probe.desired("empty", desired_state("containers"))
            messages = await probe.until("empty", FINAL)
            assert messages[-1]["status"] == "COMPLETED"
            assert [a["component"]["id"] for a in messages[1]["actions"]] == sorted(
                f"containers:{n}" for n in LEDA_NAMES
            )
            assert {a["status"] for a in messages[-1]["actions"]} == {"REMOVAL_SUCCESS"}
            left = await containers(engine)
            assert list(left) == ["sua"]
            assert left["sua"] == (sua_id, ContainerStatus.RUNNING, left["sua"][2])

            probe.send(
                probe.topics.current_state_get, {"activityId": "get-1", "timestamp": now_ms()}
            )
            state = await probe.state("get-1")
            assert [n["id"] for n in state["softwareNodes"]] == [
                "containers-update-agent",
                "containers:sua",
            ]
    assert "activity-id-leda-containers" in agent.log()


# --- orchestrated: the Kanto update manager's flow (spec §6.2) -----------------------------


def action(name: str, status: str, message: str, domain: str = "orch") -> dict[str, Any]:
    return {
        "component": {"id": f"{domain}:{name}", "version": "1"},
        "status": status,
        "message": message,
    }


async def um_phase(
    probe: Probe, activity: str, command: str, done: set[str]
) -> list[dict[str, Any]]:
    before = len(probe.of(activity))
    probe.command(activity, command)
    deadline = time.monotonic() + WAIT
    while True:
        new = probe.of(activity)[before:]
        for index, message in enumerate(new):
            if message["status"] in done:
                return collapse_progress(new[: index + 1])
        assert time.monotonic() < deadline, f"{command}: {new}"
        await asyncio.sleep(0.02)


CREATE_MSG = "New container will be created and started."
NO_ENTRYPOINT = "/no/such/entrypoint"  # not in the image: the start fails on any host
RECREATE_MSG = "Existing container will be destroyed and replaced by a new one."


async def test_orchestrated_as_the_kanto_update_manager(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    with agent_for(stack, tmp_path, "orch", mode="orchestrated"):
        async with probe_for(stack, "orch") as probe:
            await probe.state("initial")
            probe.desired(
                "um-1", desired_state("orch", component("app", "1", image=app_images["v1"]))
            )
            assert await probe.until("um-1", {"IDENTIFIED"}) == [
                {"status": "IDENTIFYING"},
                {"status": "IDENTIFIED", "actions": [action("app", "IDENTIFIED", CREATE_MSG)]},
            ]
            assert await containers(engine) == {}  # nothing happens before DOWNLOAD
            # Byte for byte as Kanto writes them (key order, compact, omitted empty fields).
            raw = [payload for aid, payload in probe.raw_feedback if aid == "um-1"]
            envelope = rb'\{"activityId":"um-1","timestamp":\d+,"payload":%s\}'
            assert re.fullmatch(envelope % re.escape(b'{"status":"IDENTIFYING"}'), raw[0])
            identified = (
                b'{"status":"IDENTIFIED","actions":[{"component":{"id":"orch:app",'
                b'"version":"1"},"status":"IDENTIFIED",'
                b'"message":"New container will be created and started."}]}'
            )
            assert re.fullmatch(envelope % re.escape(identified), raw[1])

            # A command that fails to decode is answered with its failure; nothing changes.
            probe.send(
                probe.topics.desired_state_command,
                {"activityId": "um-1", "payload": {"command": "DOWNLOAD", "baseline": 5}},
            )
            assert (await probe.until("um-1", {"DOWNLOAD_FAILURE"}))[-1] == {
                "status": "DOWNLOAD_FAILURE",
                "message": "invalid desired state command: payload.baseline: "
                "Input should be a valid string",
                "actions": [action("app", "IDENTIFIED", CREATE_MSG)],
            }
            assert await containers(engine) == {}

            assert await um_phase(
                probe, "um-1", "DOWNLOAD", {"DOWNLOAD_SUCCESS", "DOWNLOAD_FAILURE"}
            ) == [
                {"status": "DOWNLOADING", "actions": [action("app", "DOWNLOADING", CREATE_MSG)]},
                {
                    "status": "DOWNLOAD_SUCCESS",
                    "actions": [action("app", "DOWNLOAD_SUCCESS", "New container created.")],
                },
            ]
            assert await um_phase(
                probe, "um-1", "UPDATE", {"UPDATE_SUCCESS", "UPDATE_FAILURE"}
            ) == [
                {
                    "status": "UPDATE_SUCCESS",
                    "actions": [action("app", "DOWNLOAD_SUCCESS", "New container created.")],
                },
            ]
            assert await um_phase(
                probe, "um-1", "ACTIVATE", {"ACTIVATION_SUCCESS", "ACTIVATION_FAILURE"}
            ) == [
                {
                    "status": "ACTIVATING",
                    "actions": [action("app", "ACTIVATING", "New container created.")],
                },
                {
                    "status": "ACTIVATION_SUCCESS",
                    "actions": [
                        action("app", "ACTIVATION_SUCCESS", "New container instance is started.")
                    ],
                },
            ]
            started = [action("app", "ACTIVATION_SUCCESS", "New container instance is started.")]
            assert await um_phase(probe, "um-1", "CLEANUP", {"COMPLETED", "INCOMPLETE"}) == [
                {"status": "CLEANUP_SUCCESS", "actions": started},
                {"status": "COMPLETED", "actions": started},
            ]
            before = await containers(engine)
            assert before["app"][1] is ContainerStatus.RUNNING

            # A failure: the new container cannot start; the UM sends CLEANUP (no ROLLBACK).
            probe.desired(
                "um-2",
                desired_state(
                    "orch", component("app", "1", image=app_images["v2"], cmd=NO_ENTRYPOINT)
                ),
            )
            assert await probe.until("um-2", {"IDENTIFIED"}) == [
                {"status": "IDENTIFYING"},
                {"status": "IDENTIFIED", "actions": [action("app", "IDENTIFIED", RECREATE_MSG)]},
            ]
            download = await um_phase(
                probe, "um-2", "DOWNLOAD", {"DOWNLOAD_SUCCESS", "DOWNLOAD_FAILURE"}
            )
            assert statuses(download) == ["DOWNLOADING", "DOWNLOAD_SUCCESS"]
            assert (await containers(engine))["app"][0] == before["app"][0]  # old one still runs
            assert await um_phase(
                probe, "um-2", "UPDATE", {"UPDATE_SUCCESS", "UPDATE_FAILURE"}
            ) == [
                {
                    "status": "UPDATING",
                    "actions": [action("app", "UPDATING", "New container created.")],
                },
                {
                    "status": "UPDATE_SUCCESS",
                    "actions": [
                        action("app", "UPDATE_SUCCESS", "Old container instance is stopped.")
                    ],
                },
            ]
            activate = await um_phase(
                probe, "um-2", "ACTIVATE", {"ACTIVATION_SUCCESS", "ACTIVATION_FAILURE"}
            )
            assert statuses(activate) == ["ACTIVATING", "ACTIVATION_FAILURE"]
            failed = activate[-1]["actions"][0]
            assert failed["status"] == "ACTIVATION_FAILURE"
            assert "no such file or directory" in failed["message"]
            cleanup = await um_phase(probe, "um-2", "CLEANUP", {"COMPLETED", "INCOMPLETE"})
            assert statuses(cleanup) == ["CLEANUP_SUCCESS", "INCOMPLETE"]
            # D3: the device is restored: the old container runs again, the new one is gone.
            after = await containers(engine)
            assert set(after) == {"app"}
            assert after["app"][0] == before["app"][0]
            assert after["app"][1] is ContainerStatus.RUNNING

            # The UM pulls the current state with the same activityId.
            probe.send(
                probe.topics.current_state_get,
                {"activityId": "um-2", "timestamp": now_ms(), "payload": None},
            )
            state = await probe.state("um-2")
            assert state["softwareNodes"][0] == {
                "id": "orch-update-agent",
                "version": state["softwareNodes"][0]["version"],
                "name": "Eclipse Kanto Containers Update Agent",
                "parameters": [{"key": "domain", "value": "orch"}],
                "type": "APPLICATION",
            }
            assert [n["id"] for n in state["softwareNodes"][1:]] == ["orch:app"]
            raw = next(r for aid, _, r in probe.states if aid == "um-2")
            assert raw.startswith(b'{"activityId":"um-2","timestamp":')


# --- the broker goes away ---------------------------------------------------------------


async def test_broker_restarted_in_the_middle_of_an_update(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    with agent_for(stack, tmp_path, "restart", stop_timeout="3s") as agent:
        async with probe_for(stack, "restart") as probe:
            await probe.state("initial")
            probe.desired(
                "r-1", desired_state("restart", component("slow", "1", image=app_images["slow"]))
            )
            assert (await probe.until("r-1", FINAL))[-1]["status"] == "COMPLETED"

            # RECREATE: stopping the old container takes the whole 3 s grace period.
            probe.desired(
                "r-2",
                desired_state(
                    "restart", component("slow", "1", image=app_images["slow"], env="A=1")
                ),
            )
            await probe.until("r-2", {"UPDATING"})
            stack.stop_mosquitto()
            # The update finishes while the broker is down (its feedback is queued) ...
            await agent.wait_log(r"\[r-2\] feedback COMPLETED")
            # ... and the broker comes back while the agent waits >= 1 s before its next try,
            # so that our probe (retrying every 50 ms) is subscribed before the agent connects.
            seen = len(re.findall(r"retrying in", agent.log()))
            deadline = time.monotonic() + WAIT
            while True:
                delays = re.findall(r"retrying in (\d+\.\d) s", agent.log())
                if len(delays) > seen and float(delays[-1]) >= 1.0:
                    break
                seen = max(seen, len(delays)) if delays and float(delays[-1]) < 1.0 else seen
                assert time.monotonic() < deadline, agent.log()[-2000:]
                await asyncio.sleep(0.01)
            stack.start_mosquitto()
            messages = await probe.until("r-2", FINAL)
            assert statuses(messages) == standalone_statuses(updating=1)
            # A new initial current state after the reconnect.
            await agent.wait_log(r"connected to MQTT broker", count=2)
            assert (
                len([a for a, _, _ in probe.states if a.startswith("initial-current-state-")]) >= 1
            )
            # The restarted broker forgot every subscription: the agent renewed its own.
            probe.send(
                probe.topics.current_state_get,
                {"activityId": "after-restart", "timestamp": now_ms()},
            )
            await probe.state("after-restart")
    assert (await containers(engine))["slow"][1] is ContainerStatus.RUNNING


async def test_agent_started_before_the_broker(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path
) -> None:
    notify = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify))
    receiver.setblocking(False)
    stack.stop_mosquitto()
    try:
        with agent_for(stack, tmp_path, "early", env={"NOTIFY_SOCKET": str(notify)}) as agent:
            await agent.wait_log(
                r"cannot connect to broker mqtt://127\.0\.0\.1:\d+: .*; retrying in", count=2
            )
            # Ready after the first failed attempt: a down broker must not hold up systemd
            # (boot waits for a Type=notify unit and kills it after TimeoutStartSec).
            loop = asyncio.get_running_loop()
            ready = await asyncio.wait_for(loop.sock_recv(receiver, 100), 10)
            assert ready == b"READY=1"
            stack.start_mosquitto()
            async with probe_for(stack, "early") as probe:
                state = await probe.state("initial")
                assert state["softwareNodes"][0]["id"] == "early-update-agent"
    finally:
        receiver.close()
        stack.ensure_running()


async def test_tls_with_client_certificate(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path
) -> None:
    tls = stack.tls
    connection = {
        "broker_url": f"mqtts://127.0.0.1:{stack.mqtts_port}",
        "transport": {
            "root_ca": str(tls.ca_cert),
            "client_cert": str(tls.client_cert),
            "client_key": str(tls.client_key),
        },
    }
    with agent_for(stack, tmp_path, "tls", connection=connection) as agent:
        async with probe_for(stack, "tls") as probe:  # the probe uses the plain listener
            assert (await probe.state("initial"))["softwareNodes"][0]["id"] == "tls-update-agent"
            probe.send(
                probe.topics.current_state_get, {"activityId": "over-tls", "timestamp": now_ms()}
            )
            await probe.state("over-tls")
        await agent.wait_log(rf"connected to MQTT broker mqtts://127\.0\.0\.1:{stack.mqtts_port}")


async def test_tls_without_client_certificate_is_refused(stack: LocalStack, tmp_path: Path) -> None:
    connection = {
        "broker_url": f"tls://127.0.0.1:{stack.mqtts_port}",
        "transport": {"root_ca": str(stack.tls.ca_cert)},
        # TLS 1.3 reports the refusal after the handshake; the attempt must still fail at
        # once (the connect timeout is long here on purpose), with the reason logged.
        "connect_timeout": "20s",
    }
    with agent_for(stack, tmp_path, "tls-nocert", connection=connection) as agent:
        await agent.wait_log(
            r"cannot connect to broker mqtts://.*: the connection was closed before the broker"
            r" accepted it .*; retrying in",
            count=2,
            wait=10,
        )
    assert "certificate required" in agent.log()


async def test_wrong_credentials_clear_log_line_and_retries(
    stack: LocalStack, tmp_path: Path
) -> None:
    connection = {
        "broker_url": f"tcp://127.0.0.1:{stack.mqtt_auth_port}",
        "client_username": stack.mqtt_user,
        "client_password": "not-the-password-x9",
    }
    with agent_for(stack, tmp_path, "creds", connection=connection) as agent:
        await agent.wait_log(
            rf"refused the connection: (?:bad username or password|not authorized)"
            rf" \(user '{stack.mqtt_user}'\).*; retrying in",
            count=2,
        )
    assert "not-the-password-x9" not in agent.log()


async def test_right_credentials_connect(stack: LocalStack, tmp_path: Path) -> None:
    connection = {
        "broker_url": f"mqtt://127.0.0.1:{stack.mqtt_auth_port}",
        "client_username": stack.mqtt_user,
        "client_password": stack.mqtt_password,
    }
    with agent_for(stack, tmp_path, "creds-ok", connection=connection) as agent:
        async with probe_for(stack, "creds-ok") as probe:
            await probe.state("initial")
        await agent.wait_log(r"connected to MQTT broker")
    assert stack.mqtt_password not in agent.log()


# --- bad messages ---------------------------------------------------------------------------


async def test_bad_messages_answered_and_nothing_touched(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    with agent_for(stack, tmp_path, "bad") as agent:
        async with probe_for(stack, "bad") as probe:
            await probe.state("initial")
            probe.desired("ok", desired_state("bad", component("app", "1", image=app_images["v1"])))
            assert (await probe.until("ok", FINAL))[-1]["status"] == "COMPLETED"
            before = await containers(engine)

            topic = probe.topics.desired_state
            probe.send(topic, b'{"activityId": "broken", "payload": {')  # not JSON: no id readable
            probe.send(
                topic,
                go_json(
                    {
                        "activityId": "schema",
                        "payload": {"domains": [{"id": "bad", "components": "app"}]},
                    }
                ),
            )
            probe.desired(
                "domain", desired_state("other", component("app", "1", image=app_images["v2"]))
            )
            probe.desired(
                "value",
                desired_state("bad", component("app", "1", image=app_images["v2"], network="wifi")),
            )
            probe.send(probe.topics.desired_state_command, b'{"activityId": "ok", "payload": [')
            probe.send(
                probe.topics.desired_state_command,
                go_json({"activityId": "ok", "payload": {"command": 5}}),
            )

            assert await probe.until("schema", FINAL) == [
                {
                    "status": "IDENTIFICATION_FAILED",
                    "message": "invalid desired state: payload.domains[0].components: "
                    "Input should be a valid list",
                }
            ]
            # Parsing fails before identification starts: no IDENTIFYING first (spec §4.3).
            assert await probe.until("domain", FINAL) == [
                {
                    "status": "IDENTIFICATION_FAILED",
                    "message": "domain id mismatch - expecting bad, received other",
                },
            ]
            assert await probe.until("value", FINAL) == [
                {
                    "status": "IDENTIFICATION_FAILED",
                    "message": "cannot convert desired state components to container "
                    "configurations: invalid configuration for container app: "
                    "unsupported network mode wifi",
                }
            ]
            await agent.wait_log(
                r"ignored a desired state message without a readable activityId: "
                r"invalid desired state: not valid JSON"
            )
            await agent.wait_log(
                r"ignored a desired state command: invalid desired state command: not valid JSON"
            )
            await agent.wait_log(
                r'ignored a desired state command \(activityId "ok"\): '
                r"invalid desired state command: payload.command"
            )
            assert await containers(engine) == before
            assert [
                aid for aid, _ in probe.feedback if aid not in {"ok", "schema", "domain", "value"}
            ] == []


# --- the engine goes away -------------------------------------------------------------------


async def test_engine_down_at_start_then_back(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    # The agent's engine socket is a link that does not exist yet: the engine is "down".
    link = tmp_path / "engine.sock"
    with agent_for(stack, tmp_path, "late-engine", engine=f"unix://{link}") as agent:
        async with probe_for(stack, "late-engine") as probe:
            initial = await probe.state("initial")
            assert [n["id"] for n in initial["softwareNodes"]] == ["late-engine-update-agent"]
            probe.desired(
                "down", desired_state("late-engine", component("app", "1", image=app_images["v1"]))
            )
            failed = await probe.until("down", FINAL)
            assert statuses(failed) == ["IDENTIFYING", "IDENTIFICATION_FAILED"]
            assert failed[-1]["message"] == (
                f"cannot reach the container engine at unix://{link}: "
                "no such socket (is the engine installed and running?)"
            )
            await agent.wait_log(r"cannot reach the container engine at .*; retrying")
            log = agent.log()
            # One short line, no client library internals, no alarm about recovery when no
            # operation was interrupted, not one line per retry and per current state.
            assert "crash recovery failed" not in log
            assert "Cannot connect to" not in log
            assert "cannot list containers" not in log
            # The engine watcher's line: at most one per 10 s (not one per retry).
            times = [
                datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                for line in log.splitlines()
                if "cannot reach the container engine" in line and line.endswith("; retrying")
            ]
            assert times
            assert all((b - a).total_seconds() >= 9.9 for a, b in itertools.pairwise(times))

            link.symlink_to(stack.docker_socket)  # the engine is back
            probe.desired(
                "up", desired_state("late-engine", component("app", "1", image=app_images["v1"]))
            )
            assert (await probe.until("up", FINAL))[-1]["status"] == "COMPLETED"
            assert (await containers(engine))["app"][1] is ContainerStatus.RUNNING
            # The event watcher came back too: a container change is published by itself.
            await engine.stop_container((await containers(engine))["app"][0], grace_period=1)
            deadline = time.monotonic() + WAIT
            while True:
                changed = [p for aid, p, _ in probe.states if aid == ""]
                params = [
                    {kv["key"]: kv["value"] for kv in n.get("parameters", [])}
                    for p in changed
                    for n in p["softwareNodes"]
                    if n["id"] == "late-engine:app"
                ]
                if any(p.get("status") not in (None, "Running") for p in params):
                    break
                assert time.monotonic() < deadline, changed
                await asyncio.sleep(0.05)
            await agent.wait_log(r"the container engine can be reached again")


# --- the tools: plan, apply, state ------------------------------------------------------------


def cua(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cua", *args],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_tools_plan_apply_state(
    engine: DockerEngine, stack: LocalStack, app_images: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"update_agent": {"activation_window": "500ms"}}))
    flags = ("--config", str(config), "--engine", stack.docker_host, "--domain", "tools")
    v1 = go_json(desired_state("tools", component("web", "1", image=app_images["v1"])))
    plan = await asyncio.to_thread(cua, "plan", "-", *flags, stdin=v1)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[1].split()[:3] == ["CREATE", "web", "1"]
    assert await containers(engine) == {}  # plan changes nothing

    applied = await asyncio.to_thread(cua, "apply", "-", *flags, stdin=v1)
    assert applied.returncode == 0, applied.stderr
    lines = applied.stdout.splitlines()
    assert "IDENTIFYING" in lines[0]
    assert "COMPLETED" in lines[-1]
    assert (await containers(engine))["web"][1] is ContainerStatus.RUNNING

    v2 = go_json(
        desired_state("tools", component("web", "1", image=app_images["v2"], restartPolicy="no"))
    )
    plan = await asyncio.to_thread(cua, "plan", "-", "--json", *flags, stdin=v2)
    assert plan.returncode == 0, plan.stderr
    actions = json.loads(plan.stdout)["actions"]
    assert [(a["kind"], a["component"]["id"]) for a in actions] == [("RECREATE", "tools:web")]
    assert "image" in actions[0]["differences"]

    failing = go_json(
        desired_state("tools", component("web", "1", image=app_images["v2"], cmd=NO_ENTRYPOINT))
    )
    applied = await asyncio.to_thread(cua, "apply", "-", *flags, stdin=failing)
    assert applied.returncode == 1
    assert "INCOMPLETE" in applied.stdout.splitlines()[-1]

    table = await asyncio.to_thread(cua, "state", *flags)
    assert table.returncode == 0, table.stderr
    rows = [row.split() for row in table.stdout.splitlines()]
    assert rows[0] == ["NAME", "VERSION", "IMAGE", "STATUS", "SINCE", "MANAGED"]
    assert [(r[0], r[2], r[3], r[-1]) for r in rows[1:]] == [
        ("web", app_images["v1"], "Running", "yes")
    ]
    state = await asyncio.to_thread(cua, "state", "--json", *flags, "--verbose-inventory")
    assert state.returncode == 0, state.stderr
    inventory = json.loads(state.stdout)
    web = next(n for n in inventory["softwareNodes"] if n["id"] == "tools:web")
    params = {kv["key"]: kv["value"] for kv in web["parameters"]}
    assert params["image"] == app_images["v1"]  # the rolled-back update left v1 running
    assert params["status"] == "Running"
    assert "privileged" in params  # verbose: every parameter


async def test_sigterm_mid_update_finishes_the_engine_call_and_reports(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    with agent_for(stack, tmp_path, "sigterm", stop_timeout="2s") as agent:
        async with probe_for(stack, "sigterm") as probe:
            await probe.state("initial")
            slow = component("slow", "1", image=app_images["slow"])
            probe.desired("s-1", desired_state("sigterm", slow))
            assert (await probe.until("s-1", FINAL))[-1]["status"] == "COMPLETED"
            changed = component("slow", "1", image=app_images["slow"], env="A=1")
            probe.desired("s-2", desired_state("sigterm", changed))
            await probe.until("s-2", {"UPDATING"})  # the 2 s stop of the old container runs
            agent.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(agent.process.wait, 30)
            assert code == 0
            # The feedback owed was published before the clean disconnect: the operation
            # ends with a final status (INCOMPLETE: it was stopped).
            messages = await probe.until("s-2", FINAL, wait=5)
            assert messages[-1]["status"] == "INCOMPLETE"
            assert messages[-1]["message"] == "stopped by SIGTERM: the operation was interrupted"
    log = agent.log()
    assert "disconnecting from MQTT broker" in log
    assert "stopped" in log.splitlines()[-1]


@pytest.mark.parametrize("interrupt", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_interrupted_apply_restores_the_previous_containers(
    engine: DockerEngine,
    stack: LocalStack,
    tmp_path: Path,
    app_images: dict[str, str],
    interrupt: tuple[signal.Signals, int],
) -> None:
    """Ctrl-C / SIGTERM during `cua apply`: what the operation changed is rolled back (the
    old containers run again, under their names), no temporary container is left."""
    signum, code = interrupt
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"update_agent": {"stop_timeout": "2s"}}))
    flags = ("--engine", stack.docker_host, "--domain", "tools", "--config", str(config))
    before = desired_state(
        "tools",
        component("slow", image=app_images["slow"]),
        component("web", image=app_images["v1"]),
    )
    applied = await asyncio.to_thread(cua, "apply", "-", *flags, stdin=go_json(before))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    previous = await containers(engine)

    after = desired_state(
        "tools",
        component("slow", image=app_images["slow"], env="A=1"),
        component("web", image=app_images["v2"]),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cua",
        "apply",
        "-",
        *flags,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(go_json(after))
    process.stdin.close()
    seen = []
    while not any("UPDATING" in line for line in seen):  # the 2 s stop of `slow` runs
        line = await asyncio.wait_for(process.stdout.readline(), WAIT)
        assert line, seen
        seen.append(line.decode())
    process.send_signal(signum)
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode == code, (seen, out, err)
    assert err.decode().splitlines() == [
        f"cua: interrupted by {signum.name}: restored slow, web as before the operation"
    ]
    assert "INCOMPLETE" in out.decode().splitlines()[-1]
    now = await containers(engine)
    assert now == previous  # same containers (ids), running, with their images; no .cua-*
    assert all(status is ContainerStatus.RUNNING for _, status, _ in now.values())


async def test_quickstart_example_runs_unchanged(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, image_factory: ImageFactory
) -> None:
    """examples/quickstart-desired-state.json as shipped: its public Docker Hub images come
    from the local registry through a mirror for docker.io (no internet in tests)."""
    example = EXAMPLES / "quickstart-desired-state.json"
    envelope = json.loads(example.read_text())
    for component_ in envelope["payload"]["domains"][0]["components"]:
        image = next(kv["value"] for kv in component_["config"] if kv["key"] == "image")
        repository, tag = image.removeprefix("docker.io/").rsplit(":", 1)
        image_factory(repository, tag, marker=component_["id"])
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "update_agent": {
                    "registry_mirrors": {"docker.io": stack.registry},
                    "download": "engine",  # the registry is in the stack's namespace
                }
            }
        )
    )
    flags = ("--engine", stack.docker_host, "--config", str(config))
    applied = await asyncio.to_thread(cua, "apply", str(example), *flags)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    now = await containers(engine)
    assert sorted(now) == ["hello-cache", "hello-web"]
    assert all(status is ContainerStatus.RUNNING for _, status, _ in now.values())
    state = await asyncio.to_thread(cua, "state", *flags)
    rows = [row.split() for row in state.stdout.splitlines()]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        ("hello-cache", "7-alpine", "docker.io/library/redis:7-alpine"),
        ("hello-web", "1.27-alpine", "docker.io/library/nginx:1.27-alpine"),
    ]


async def test_missing_bind_mount_source_names_component_path_and_what_to_do(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    missing = tmp_path / "certificates" / "device.crt"  # as Leda's cloudconnector, not there
    desired = desired_state(
        "tools", component("connector", image=app_images["v1"], mount=f"{missing}:/device.crt")
    )
    flags = ("--engine", stack.docker_host, "--domain", "tools")
    applied = await asyncio.to_thread(cua, "apply", "-", "--json", *flags, stdin=go_json(desired))
    assert applied.returncode == 1
    feedback = [json.loads(line)["payload"] for line in applied.stdout.splitlines()]
    failure = next(f for f in feedback if f["status"] == "DOWNLOAD_FAILURE")
    assert failure["actions"][0]["message"] == (
        f"cannot create container connector: the host path {missing} of its mount "
        "(mounted at /device.crt) does not exist on the device; create that file or directory "
        "on the device (see the component's prerequisites), or change the mount in the "
        "desired state"
    )
    assert feedback[-1]["status"] == "INCOMPLETE"
    assert await containers(engine) == {}


async def test_mqtt5(clean_engine: LocalStack, stack: LocalStack, tmp_path: Path) -> None:
    with agent_for(stack, tmp_path, "five", mqtt_version="5") as agent:
        async with probe_for(stack, "five") as probe:
            await probe.state("initial")
            probe.desired("v5", desired_state("five"))  # nothing to do: COMPLETED at once
            assert statuses(await probe.until("v5", FINAL)) == NOTHING_TO_DO
        await agent.wait_log(r"connected to MQTT broker")


class EngineProxy:
    """A unix-socket proxy in front of the private dockerd: `stop()` makes the engine go
    away for the agent (every connection cut, the socket gone), `start()` brings it back."""

    def __init__(self, listen: Path, target: str) -> None:
        self.listen = listen
        self.target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.listen))

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        self.listen.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, RuntimeError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_engine_goes_away_while_running_and_comes_back(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    proxy = EngineProxy(tmp_path / "engine.sock", stack.docker_socket)
    await proxy.start()
    with agent_for(stack, tmp_path, "flaky", engine=f"unix://{proxy.listen}") as agent:
        async with probe_for(stack, "flaky") as probe:
            await probe.state("initial")
            probe.desired(
                "f-1", desired_state("flaky", component("app", "1", image=app_images["v1"]))
            )
            assert (await probe.until("f-1", FINAL))[-1]["status"] == "COMPLETED"

            await proxy.stop()  # the engine goes away
            await agent.wait_log(
                r"cannot reach the container engine at \S+: the engine closed the connection; "
                r"retrying|engine event stream ended"
            )
            v2 = desired_state("flaky", component("app", "1", image=app_images["v2"]))
            probe.desired("f-2", v2)
            failed = await probe.until("f-2", FINAL)
            assert statuses(failed) == ["IDENTIFYING", "IDENTIFICATION_FAILED"]
            probe.send(probe.topics.current_state_get, {"activityId": "f-get", "timestamp": 1})
            state = await probe.state("f-get")
            assert [n["id"] for n in state["softwareNodes"]] == ["flaky-update-agent"]
            assert agent.process.poll() is None  # still running

            await proxy.start()  # the engine is back
            probe.desired("f-3", v2)
            assert (await probe.until("f-3", FINAL))[-1]["status"] == "COMPLETED"
            assert (await containers(engine))["app"][2] == app_images["v2"]
    await proxy.stop()


# --- crash: the agent is killed in the middle of an operation --------------------------------


async def test_agent_killed_mid_operation_recovers_from_its_journal(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, app_images: dict[str, str]
) -> None:
    """SIGKILL after UPDATE stopped a container for DESTROY: the next start runs it again
    (only the journal in state_dir says it was stopped by the operation)."""
    setup = UpdateManager(
        engine, RecordingPublisher(), UpdateSettings(domain="crash", activation_window=0.5)
    )
    first = desired_state("crash", component("gone", "1", image=app_images["v1"]))
    assert await setup.apply("setup", DesiredState.model_validate(first)) == "COMPLETED"
    state_dir = tmp_path / "state"
    config = {
        "update_agent": {
            "domain": "crash",
            "mode": "orchestrated",
            "engine": stack.docker_host,
            "stop_timeout": "2s",
            "state_dir": str(state_dir),
        },
        "connection": {"broker_url": stack.broker_url},
    }
    killed = AgentProcess(tmp_path / "killed", config)
    try:
        async with probe_for(stack, "crash") as probe:
            await probe.state("initial")
            probe.desired("c-1", desired_state("crash"))
            await probe.until("c-1", {"IDENTIFIED"})
            await um_phase(probe, "c-1", "DOWNLOAD", {"DOWNLOAD_SUCCESS", "DOWNLOAD_FAILURE"})
            await um_phase(probe, "c-1", "UPDATE", {"UPDATE_SUCCESS", "UPDATE_FAILURE"})
    finally:
        killed.process.kill()
        killed.process.wait()
        killed.stop()
    assert (await containers(engine))["gone"][1] is ContainerStatus.EXITED
    journal = state_dir / "journal-crash.jsonl"
    assert '"step":"stopped"' in journal.read_text()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700

    with agent_for(stack, tmp_path, "crash", mode="orchestrated") as agent:
        await agent.wait_log(r"recovery: gone: container stopped by the operation started again")
        assert (await containers(engine))["gone"][1] is ContainerStatus.RUNNING
        # The journal goes once the broker acknowledged the owed INCOMPLETE.
        await until_true(lambda: not journal.exists())


# --- lean: what the idle agent imports ---------------------------------------------------------

# Modules an idle agent never uses: schema generation, display, the CLI tools' helpers, test
# doubles and dev tools, HTTP stacks and model libraries the agent does not use (pydantic: the
# models are msgspec's). Importing one costs memory
# (RSS) and start-up time for nothing (README, Performance).
LAZY = (
    "cua.api.schema",
    "cua.display",
    "cua.testing",
    "cua_dev",
    "aiohttp",
    "aiodocker",
    "httpx",
    "pydantic",
    "unittest",
    "pydoc",
    "doctest",
)


async def test_the_idle_agent_imports_nothing_on_the_lazy_list(
    stack: LocalStack, tmp_path: Path
) -> None:
    # PYTHONPROFILEIMPORTTIME: Python reports every import on stderr, as it happens.
    with agent_for(stack, tmp_path, "lean", env={"PYTHONPROFILEIMPORTTIME": "1"}) as agent:
        async with probe_for(stack, "lean") as probe:
            await probe.state("initial")
            await asyncio.sleep(0.5)  # idle
    imported = {
        match.group(1)
        for match in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", agent.log(), re.M)
    }
    assert "cua.agent" in imported  # the report is there
    assert "cua.engine.transport" in imported
    eager = sorted(m for m in imported if m.split(".")[0] in LAZY or m.startswith(LAZY))
    assert eager == [], f"the idle agent imported {eager}"
