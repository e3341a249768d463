"""`make demo`: the agent's main job, end to end, on private services, in under a minute.

It starts the local stack (a private dockerd, registry and mosquitto), pushes tiny stand-ins
for the five images of Leda's desired state to the local registry under their own paths,
starts `cua run` with `registry_mirrors` {ghcr.io: <local registry>} (the agent fetches the
images itself, `download: "agent"`, the default: through a loopback forwarder into the
stack's network namespace, where the registry is; the stack's dockerd, in that namespace,
does not reach the agent's loopback registry, so the agent loads them as archives), and
publishes the desired state with `mosquitto_pub -t containersupdate/desiredstate -f ...`,
exactly as the Kanto and Leda docs say. Then an update of one image (v2), an update whose
new image lacks its entrypoint (its container cannot start on any host), which the agent
rolls back, and the quick-start example as shipped (its Docker Hub images through a mirror
too). Everything it started is stopped at the end, also on Ctrl-C or failure; the agent log
and every MQTT message are kept in a directory named at the end, followed by the next steps
(the agent on this machine's own Docker and broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt

from cua.api.envelope import go_json, now_ms
from cua.api.models import DesiredStateFeedback, Inventory, StatusType
from cua.api.topics import Topics
from cua.display import FeedbackPrinter
from cua.engine.docker import DockerEngine
from cua_dev.images import ImageSpec, push_image, split_reference
from cua_dev.processes import stop_pid
from cua_dev.proxy import RegistryProxy
from cua_dev.stack import LocalStack
from cua_dev.unixhttp import docker_exec

__all__ = ["main"]

TOPICS = Topics.for_domain("containers")
FINAL = {StatusType.COMPLETED, StatusType.INCOMPLETE, StatusType.IDENTIFICATION_FAILED}
BROKEN_TAG = "v0.3.1"  # a seatservice stand-in whose entrypoint is not in the image
STEP_TIMEOUT = 40.0  # seconds for one desired state to finish


def _say(text: str = "") -> None:
    print(text, flush=True)


def _title(text: str) -> None:
    _say()
    _say(f"=== {text} " + "=" * max(0, 74 - len(text)))


def leda_desired_state() -> dict[str, Any]:
    """The Leda example shipped with the package sources (examples/leda-desired-state.json)."""
    candidates = [
        Path(__file__).resolve().parents[2] / "examples" / "leda-desired-state.json",
        Path.cwd() / "examples" / "leda-desired-state.json",
    ]
    for path in candidates:
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    raise SystemExit("demo: examples/leda-desired-state.json not found (run from the repo)")


# The stand-in databroker answers on Kuksa's port: `wget http://databroker:55555/marker`
# from an app shows which databroker (and which version) its name reaches.
DATABROKER_PORT = 55555
_SERVE_MARKER = f"trap 'exit 0' TERM INT; httpd -f -p {DATABROKER_PORT} -h / & wait"
_SERVE_WEBUI = "trap 'exit 0' TERM INT; httpd -f -p 80 -h / & wait"


def leda_standin(component_id: str, tag: str) -> ImageSpec:
    """The stand-in image of a Leda component: `/marker` names it; databroker's serves it."""
    marker = f"{component_id} {tag}"
    if component_id == "databroker":
        return ImageSpec(marker=marker, cmd=("sh", "-c", _SERVE_MARKER))
    return ImageSpec(marker=marker)


def components(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = envelope["payload"]["domains"][0]["components"]
    return result


def config_value(component: dict[str, Any], key: str) -> str:
    for entry in component["config"]:
        if entry["key"] == key:
            return str(entry["value"])
    raise KeyError(key)


def set_config(component: dict[str, Any], key: str, value: str) -> None:
    for entry in component["config"]:
        if entry["key"] == key:
            entry["value"] = value
            return
    component["config"].append({"key": key, "value": value})


def rewrite_mounts(envelope: dict[str, Any], root: Path) -> list[str]:
    """Point absolute mount sources (cloudconnector's /data/var/certificates/...) at files
    created under the stack's temp dir: the demo must not write to the host's /data."""
    notes = []
    for component in components(envelope):
        for entry in component["config"]:
            if entry["key"] != "mount":
                continue
            source, _, rest = entry["value"].partition(":")
            local = root / source.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(f"demo stand-in for {source}\n")
            entry["value"] = f"{local}:{rest}"
            notes.append(f"{component['id']}: mount {source} -> {local}")
    return notes


class FeedbackWatcher:
    """Subscribes to feedback and current state; prints feedback lines as they come."""

    def __init__(self, port: int, record: Path) -> None:
        self._port = port
        self._record = record  # every message on the domain's topics, one JSON per line
        self._feedback: asyncio.Queue[tuple[str, DesiredStateFeedback]] = asyncio.Queue()
        self.states: asyncio.Queue[tuple[str, Inventory]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self._port, identifier=f"demo-{now_ms()}") as client:
            await client.subscribe([(f"{TOPICS.prefix}/#", 1)])
            self.subscribed.set()
            async for message in client.messages:
                raw = message.payload if isinstance(message.payload, bytes) else b"{}"
                with self._record.open("a", encoding="utf-8") as record:
                    topic = message.topic.value
                    record.write(json.dumps({"topic": topic, "message": json.loads(raw)}) + "\n")
                if message.topic.value not in (TOPICS.desired_state_feedback, TOPICS.current_state):
                    continue
                data = json.loads(raw)
                activity = data.get("activityId", "")
                if message.topic.value == TOPICS.desired_state_feedback:
                    feedback = DesiredStateFeedback.model_validate(data["payload"])
                    await self._feedback.put((activity, feedback))
                else:
                    await self.states.put((activity, Inventory.model_validate(data["payload"])))

    async def follow(self, activity_id: str) -> StatusType:
        """Print the feedback of `activity_id` until its final status."""
        printer = FeedbackPrinter()
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                activity, feedback = await self._feedback.get()
                if activity != activity_id:
                    continue
                _say("  " + printer.format(feedback))
                if feedback.status in FINAL and not feedback.baseline:
                    assert feedback.status is not None
                    return feedback.status

    async def next_state(self, activity_id: str | None = None) -> Inventory:
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                activity, inventory = await self.states.get()
                if activity_id is None or activity == activity_id:
                    return inventory


def show_inventory(inventory: Inventory) -> None:
    for node in inventory.software_nodes:
        params = {p.key: p.value for p in node.parameters}
        status = params.get("status", "")
        extra = f" status={status}" if status else ""
        image = params.get("image", "")
        _say(f"  {node.id:<34} {node.version:<16} {node.type.value if node.type else ''}{extra}")
        if image:
            _say(f"  {'':<34} image={image}")


async def show_containers(stack: LocalStack) -> None:
    engine = DockerEngine(stack.docker_host)
    try:
        listed = sorted(await engine.list_containers(), key=lambda c: c.name)
    finally:
        await engine.close()
    _say(f"  {'NAME':<22} {'STATUS':<8} IMAGE")
    for container in listed:
        _say(f"  {container.name:<22} {container.status.value:<8} {container.image}")


LEDA_APPS = ("feedercan", "hvacservice-example", "seatservice-example")
WEBUI_PORT = 8080  # published by the demo's extra component, inside the stack's namespace


def show_network(stack: LocalStack, expected_broker: str) -> bool:
    """Inside each Leda app: what `databroker` resolves to (its /etc/hosts entry) and what
    `http://databroker:55555/marker` answers. True when every app reaches `expected`."""
    ok = True
    for app in LEDA_APPS:
        _code, hosts = docker_exec(stack.docker_host, app, ["grep", "databroker", "/etc/hosts"])
        code, reply = docker_exec(
            stack.docker_host, app, ["wget", "-qO-", f"http://databroker:{DATABROKER_PORT}/marker"]
        )
        entry = " ".join(hosts.split()) or "(none)"
        _say(f"  in {app:<20} /etc/hosts: {entry:<24} databroker:{DATABROKER_PORT} -> {reply!r}")
        ok = ok and code == 0 and reply == expected_broker
    return ok


def show_webui(stack: LocalStack) -> bool:
    """The extra component's published port, reached inside the stack's namespace."""
    reply = stack.netns.exchange("127.0.0.1", WEBUI_PORT, b"GET /marker HTTP/1.0\r\n\r\n")
    body = reply.partition(b"\r\n\r\n")[2].decode(errors="replace")
    _say(f"  http://127.0.0.1:{WEBUI_PORT}/marker (inside the stack's netns) -> {body!r}")
    return body == "webui 1.0"


async def mosquitto_pub(stack: LocalStack, topic: str, *args: str, show: bool = True) -> None:
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(stack.mqtt_port), "-q", "1"]
    command += ["-t", topic, *args]
    if show:
        _say("  $ " + " ".join(command))
    process = await asyncio.create_subprocess_exec(*command)
    if await asyncio.wait_for(process.wait(), 10) != 0:
        raise RuntimeError(f"mosquitto_pub failed (exit code {process.returncode})")


@contextlib.contextmanager
def agent_process(config_path: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "cua", "run", "--config", str(config_path)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        stop_pid(process.pid, timeout=20, proc=process)
        log_file.close()


QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart-desired-state.json"


async def run_demo(stack: LocalStack, trail: Path) -> bool:
    # The registry is in the stack's network namespace (where its dockerd is); the agent,
    # which fetches the images itself, reaches it through a loopback forwarder.
    with RegistryProxy(stack.registry_connect) as forwarder:
        _say(f"  the registry for the agent: {forwarder.address} (a loopback forwarder)")
        return await _demo_steps(stack, forwarder.address, trail)


async def _demo_steps(stack: LocalStack, registry: str, trail: Path) -> bool:
    """`registry`: where the agent reaches the stack's registry (its images' downloads are
    the agent's own, `download: "agent"`, the default)."""
    started = time.monotonic()
    work = stack.tmpdir / "demo"
    work.mkdir()
    desired = leda_desired_state()

    _title("1. Tiny stand-in images for Leda's five images, pushed to the local registry")
    for component in components(desired):
        image = config_value(component, "image")
        _registry, repository, tag = split_reference(image)
        spec = leda_standin(component["id"], tag)
        push_image(stack.registry, repository, tag, spec, netns=stack.netns)
        _say(f"  {stack.registry}/{repository}:{tag}")
    databroker = components(desired)[0]
    _registry, repository, _tag = split_reference(config_value(databroker, "image"))
    newer = leda_standin("databroker", "0.4.0")
    push_image(stack.registry, repository, "0.4.0", newer, netns=stack.netns)
    webui = ImageSpec(marker="webui 1.0", cmd=("sh", "-c", _SERVE_WEBUI))
    push_image(stack.registry, "demo/webui", "1.0", webui, netns=stack.netns)
    _say(f"  {stack.registry}/demo/webui:1.0   (a web server, added by the update below)")
    _say(f"  {stack.registry}/{repository}:0.4.0   (the v2 of the update below)")
    seatservice = components(desired)[3]
    _registry, repository, _tag = split_reference(config_value(seatservice, "image"))
    broken = ImageSpec(marker="seatservice broken", entrypoint=("/app/seat_service",), cmd=None)
    push_image(stack.registry, repository, BROKEN_TAG, broken, netns=stack.netns)
    _say(f"  {stack.registry}/{repository}:{BROKEN_TAG}   (its entrypoint is missing)")
    quickstart = json.loads(QUICKSTART.read_text())
    for component in components(quickstart):
        _registry, repository, tag = split_reference(config_value(component, "image"))
        spec = ImageSpec(marker=f"{component['id']} {tag}")
        push_image(stack.registry, repository, tag, spec, netns=stack.netns)
        _say(f"  {stack.registry}/{repository}:{tag}   (for the quick-start example)")

    for note in rewrite_mounts(desired, work / "host"):
        _say(
            f"  note: {note} (the demo's copy of the desired state; the host's /data is untouched)"
        )

    config = {
        "update_agent": {
            "enable": True,
            "engine": stack.docker_host,
            "state_dir": str(work / "state"),
            "registry_mirrors": {"ghcr.io": registry, "docker.io": registry},
            "stop_timeout": "5s",
        },
        "connection": {"broker_url": stack.broker_url},
    }
    config_path = trail / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = trail / "agent.log"

    _title("2. Starting the agent: cua run --config config.json")
    _say(f"  config: {json.dumps(config)}")
    _say(f"  agent log: {log_path}")
    watcher = FeedbackWatcher(stack.mqtt_port, trail / "mqtt-messages.jsonl")
    ok = True
    with agent_process(config_path, log_path) as agent:
        async with asyncio.TaskGroup() as group:
            watch = group.create_task(watcher.run())
            try:
                await asyncio.wait_for(watcher.subscribed.wait(), 10)
                initial = await watcher.next_state()
                _say("  the agent is up; its initial current state:")
                show_inventory(initial)

                steps = [
                    (
                        "3. The Leda desired state, published as the Kanto docs say",
                        desired,
                        StatusType.COMPLETED,
                        lambda: show_network(stack, "databroker 0.3.0"),
                    ),
                ]
                v2 = copy.deepcopy(desired)
                broker_v2 = components(v2)[0]
                broker_v2["version"] = "0.4.0"
                set_config(
                    broker_v2, "image", config_value(broker_v2, "image").replace(":0.3.0", ":0.4.0")
                )
                v2["activityId"] = "demo-update-databroker-v2"
                components(v2).append(
                    {
                        "id": "webui",
                        "version": "1.0",
                        "config": [
                            {"key": "image", "value": "ghcr.io/demo/webui:1.0"},
                            {"key": "port", "value": f"127.0.0.1:{WEBUI_PORT}:80/tcp"},
                        ],
                    }
                )

                def check_v2() -> bool:
                    return show_network(stack, "databroker 0.4.0") and show_webui(stack)

                steps.append(
                    (
                        "4. Update one image (databroker 0.3.0 -> 0.4.0; the apps follow it) "
                        f"and add a web server on port {WEBUI_PORT}",
                        v2,
                        StatusType.COMPLETED,
                        check_v2,
                    )
                )
                bad = copy.deepcopy(v2)
                seat_bad = components(bad)[3]
                seat_bad["version"] = BROKEN_TAG
                image = config_value(seat_bad, "image")
                set_config(seat_bad, "image", image.rpartition(":")[0] + ":" + BROKEN_TAG)
                bad["activityId"] = "demo-broken-seatservice"
                steps.append(
                    (
                        f"5. An update whose new image cannot start (seatservice {BROKEN_TAG}: "
                        "its entrypoint is missing): rolled back",
                        bad,
                        StatusType.INCOMPLETE,
                        lambda: show_network(stack, "databroker 0.4.0"),
                    )
                )
                steps.append(
                    (
                        "6. The quick-start example as shipped "
                        "(examples/quickstart-desired-state.json): replaces Leda's containers",
                        quickstart,
                        StatusType.COMPLETED,
                        lambda: True,
                    )
                )
                for index, (title, envelope, expected, check) in enumerate(steps):
                    _title(title)
                    path = trail / f"desired-state-{index}.json"
                    path.write_bytes(go_json(envelope))
                    if envelope is quickstart:
                        path = QUICKSTART  # as shipped
                    await mosquitto_pub(stack, TOPICS.desired_state, "-f", str(path))
                    status = await watcher.follow(envelope["activityId"])
                    verdict = "as expected" if status is expected else f"EXPECTED {expected.value}"
                    _say(f"  => {status.value} ({verdict})")
                    ok = ok and status is expected
                    _say("  containers on the engine now:")
                    await show_containers(stack)
                    _say("  networking, from inside the containers and the stack's namespace:")
                    ok = await asyncio.to_thread(check) and ok
                    if agent.poll() is not None:
                        raise RuntimeError("the agent exited")
                _title("7. The current state (retained on containersupdate/currentstate)")
                request = {"activityId": "demo-current-state", "timestamp": now_ms()}
                await mosquitto_pub(
                    stack, TOPICS.current_state_get, "-m", json.dumps(request), show=False
                )
                show_inventory(await watcher.next_state("demo-current-state"))
            finally:
                watch.cancel()
    verdict = "all as expected" if ok else "SOMETHING WENT WRONG"
    _title(f"Done in {time.monotonic() - started:.1f} s: {verdict}")
    if not ok:
        _say(log_path.read_text()[-4000:])
    return ok


NEXT_STEPS = """
Next steps: the agent on this machine's own Docker and MQTT broker (README.md, "Run it on
your device"), as root, from this directory:
  apt-get install docker.io mosquitto mosquitto-clients python3-venv make
  make install
  systemctl enable --now cua
  mosquitto_pub -t containersupdate/desiredstate -f examples/quickstart-desired-state.json
  mosquitto_sub -v -t containersupdate/desiredstatefeedback -t containersupdate/currentstate
  cua state
"""


def main() -> int:
    _say(
        "Container update agent demo: private dockerd, registry and mosquitto (nothing system-wide)"
    )
    os.environ.pop("DOCKER_HOST", None)
    trail = Path(tempfile.mkdtemp(prefix="cua-demo-"))
    stack = LocalStack()
    try:
        _say("starting the local stack ...")
        stack.start()
        _say(f"  dockerd {stack.docker_host}, registry {stack.registry} (in its namespace)")
        _say(f"  mosquitto {stack.broker_url}")
        return 0 if asyncio.run(run_demo(stack, trail)) else 1
    except KeyboardInterrupt:
        _say("\ninterrupted")
        return 130
    finally:
        _say("stopping everything the demo started ...")
        stack.stop()
        _say(f"\nThe demo's trail is kept in {trail}:")
        _say("  agent.log (the agent's log), mqtt-messages.jsonl (every MQTT message on")
        _say("  containersupdate/...), config.json and the desired states it published.")
        _say(NEXT_STEPS.rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
