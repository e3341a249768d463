"""The local stack really works: registry -> dockerd pulls, containers run, MQTT round-trips
on every listener, and stopping a stack leaves no process and no directory behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from cua_dev.images import Healthcheck, ImageFactory, ImageSpec, load_image
from cua_dev.processes import (
    ServiceError,
    ServiceProcess,
    alive,
    descendants,
    free_port,
    processes_referencing,
)
from cua_dev.stack import LocalStack
from cua_dev.unixhttp import RawEngine, demultiplex, engine_json, engine_request

pytestmark = pytest.mark.integration


@pytest.fixture
def docker(clean_engine: LocalStack) -> RawEngine:
    return RawEngine(clean_engine.docker_host)


def _run(docker: RawEngine, name: str, config: dict[str, object]) -> str:
    """Create and start a container; its id."""
    container_id = str(docker.json("POST", "/containers/create", config, name=name)["Id"])
    docker.json("POST", f"/containers/{container_id}/start")
    return container_id


def _output(docker: RawEngine, container_id: str) -> str:
    """A finished container's stdout (the engine's multiplexed log stream, no TTY)."""
    docker.json("POST", f"/containers/{container_id}/wait")
    status, data = engine_request(docker.host, "GET", f"/containers/{container_id}/logs?stdout=1")
    assert status == 200, data
    return demultiplex(data).decode()


def test_pushed_image_is_pulled_and_runs(docker: RawEngine, image_factory: ImageFactory) -> None:
    reference = image_factory(
        "eclipse/kuksa.val/databroker", "0.3.0", marker="smoke", labels={"app": "smoke"}
    )
    docker.pull(reference)  # POST /images/create
    image = docker.image(reference)
    assert image["Id"] == image_factory.images[reference].image_id
    assert image["Config"]["Labels"] == {"app": "smoke"}

    container_id = _run(docker, "smoke", {"Image": reference})
    info = docker.container(container_id)
    assert info["State"]["Running"] is True
    assert info["Config"]["Image"] == reference
    docker.json("POST", f"/containers/{container_id}/stop", t="10")
    info = docker.container(container_id)
    assert info["State"]["Running"] is False
    assert info["State"]["ExitCode"] == 0  # the default command exits on SIGTERM at once
    docker.json("DELETE", f"/containers/{container_id}")
    assert docker.json("GET", "/containers/json", all="1") == []


def test_marker_differs_between_versions(docker: RawEngine, image_factory: ImageFactory) -> None:
    outputs = []
    for version in ("v1", "v2"):
        reference = image_factory("smoke/marker", version, marker=f"content-{version}")
        docker.pull(reference)
        container_id = _run(
            docker, f"marker-{version}", {"Image": reference, "Cmd": ["cat", "/marker"]}
        )
        outputs.append(_output(docker, container_id))
    assert outputs == ["content-v1", "content-v2"]


async def test_sized_image_and_healthcheck(docker: RawEngine, image_factory: ImageFactory) -> None:
    reference = image_factory(
        "smoke/sized",
        "1",
        marker="sized",
        size_mb=20,
        healthcheck=Healthcheck(("CMD", "test", "-f", "/marker"), interval_s=0.2, retries=1),
    )
    docker.pull(reference)
    image = docker.image(reference)
    assert 19.5 * 1024 * 1024 < image["Size"] < 20.5 * 1024 * 1024
    container_id = _run(docker, "sized", {"Image": reference})
    statuses = []
    async with asyncio.timeout(20):
        for _ in range(200):
            statuses.append(docker.container(container_id)["State"]["Health"]["Status"])
            if statuses[-1] == "healthy":
                break
            await asyncio.sleep(0.1)
    assert statuses[-1] == "healthy", statuses


def test_loaded_image_needs_no_registry(
    docker: RawEngine, image_factory: ImageFactory, stack: LocalStack
) -> None:
    stack.stop_registry()
    try:
        reference = image_factory("local/only", "1", push=False, load=True, marker="loaded")
        image = docker.image(reference)
        assert image["Id"] == image_factory.images[reference].image_id
        with pytest.raises(RuntimeError, match="pull"):
            docker.pull(f"{stack.registry}/never/pushed:1")
    finally:
        stack.start_registry()


LISTENER_CMD = ["sh", "-c", "trap 'exit 0' TERM; while true; do echo pong | nc -l -p 80; done"]


async def test_containers_get_addresses_and_ports_inside_the_namespace_only(
    docker: RawEngine, image_factory: ImageFactory, stack: LocalStack
) -> None:
    reference = image_factory("smoke/listener", "1", marker="listener")
    docker.pull(reference)
    port = free_port()  # free on the machine's loopback too
    container_id = _run(
        docker,
        "listener",
        {
            "Image": reference,
            "Cmd": LISTENER_CMD,
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": str(port)}]}},
        },
    )
    settings = docker.container(container_id)["NetworkSettings"]
    address, gateway = settings["IPAddress"], settings["Gateway"]
    assert address  # a real address on dockerd's own bridge
    assert gateway
    # Reached from inside the namespace only: the published port on its loopback and on
    # the bridge's gateway, and the container's own address.
    for host, target in (("127.0.0.1", port), (gateway, port), (address, 80)):
        reply = await asyncio.to_thread(stack.netns.exchange, host, target)
        assert reply == b"pong\n", (host, target)
    # The machine's own loopback has no such port (loopback only: nothing else is tried).
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def test_the_namespace_has_no_route_out(docker: RawEngine) -> None:
    """A reference naming a remote registry fails inside the namespace at once."""
    async with asyncio.timeout(60):  # hang guard
        with pytest.raises(RuntimeError, match="pull"):
            await asyncio.to_thread(docker.pull, "docker.io/library/busybox:latest")


async def _round_trip(client_args: dict[str, object], topic: str) -> aiomqtt.Message:
    async with aiomqtt.Client("127.0.0.1", **client_args) as client:  # type: ignore[arg-type]
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"payload", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                return message
    raise AssertionError("no message")


def _tls(stack: LocalStack, *, with_client_cert: bool = True) -> aiomqtt.TLSParameters:
    return aiomqtt.TLSParameters(
        ca_certs=str(stack.tls.ca_cert),
        certfile=str(stack.tls.client_cert) if with_client_cert else None,
        keyfile=str(stack.tls.client_key) if with_client_cert else None,
    )


async def test_qos1_round_trip_plain(stack: LocalStack) -> None:
    message = await _round_trip({"port": stack.mqtt_port}, "smoke/plain")
    assert (message.payload, message.qos, str(message.topic)) == (b"payload", 1, "smoke/plain")


async def test_qos1_round_trip_tls_with_client_certificate(stack: LocalStack) -> None:
    message = await _round_trip({"port": stack.mqtts_port, "tls_params": _tls(stack)}, "t/tls")
    assert (message.payload, message.qos) == (b"payload", 1)


async def test_tls_listener_requires_a_client_certificate(stack: LocalStack) -> None:
    # With TLS 1.3 the broker's refusal (an alert) only arrives after the handshake, and
    # paho then reports the failed connect as a timeout: hence the short timeout.
    args = {
        "port": stack.mqtts_port,
        "tls_params": _tls(stack, with_client_cert=False),
        "timeout": 2,
    }
    with pytest.raises(aiomqtt.MqttError):
        await _round_trip(args, "t/nocert")


async def test_password_listener(stack: LocalStack) -> None:
    good = {"port": stack.mqtt_auth_port, "username": stack.mqtt_user}
    message = await _round_trip({**good, "password": stack.mqtt_password}, "t/auth")
    assert message.payload == b"payload"
    with pytest.raises(aiomqtt.MqttError):
        await _round_trip({**good, "password": "wrong-password"}, "t/auth")


async def test_broker_restart_keeps_its_port(stack: LocalStack) -> None:
    stack.stop_mosquitto()
    try:
        with pytest.raises(aiomqtt.MqttError):
            await _round_trip({"port": stack.mqtt_port, "timeout": 2}, "t/down")
    finally:
        stack.start_mosquitto()
    message = await _round_trip({"port": stack.mqtt_port}, "t/up")
    assert message.payload == b"payload"


def test_service_start_failure_reports_log_tail(tmp_path: Path) -> None:
    svc = ServiceProcess("broken", ["sh", "-c", "echo cannot bind port; exit 3"], tmp_path / "l")
    with pytest.raises(ServiceError, match=r"(?s)broken exited with status 3.*cannot bind port"):
        svc.start(lambda: False, timeout=10)
    assert svc.pid is None


def test_stopped_stack_leaves_no_process_and_no_directory() -> None:
    stack = LocalStack()
    stack.start()
    try:
        # A running container makes dockerd's containerd start a shim: it must go too.
        load_image(stack.docker_host, ImageSpec(marker="leak"), "leak:1")
        created = engine_json(stack.docker_host, "POST", "/containers/create", {"Image": "leak:1"})
        engine_json(stack.docker_host, "POST", f"/containers/{created['Id']}/start")
        pids = stack.pids()
        tmpdir = stack.tmpdir
        # dockerd, containerd, mosquitto, registry, and the shim + container process.
        assert len(pids) >= 5
        assert all(alive(pid) for pid in pids)
    finally:
        stack.stop()
    assert [pid for pid in pids if alive(pid)] == []
    assert descendants(sorted(pids)) == set()
    assert not tmpdir.exists()
    assert stack.pids() == set()


def _run_stack_process(code: list[str]) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a Python process running a stack; return it and its first output lines up to
    the one naming the temp dir."""
    devtools = str(Path(__file__).resolve().parents[2] / "devtools")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([devtools, os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, *code], stdout=subprocess.PIPE, text=True, start_new_session=True, env=env
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not any(line.startswith("tmpdir:") for line in lines):
        line = proc.stdout.readline()
        assert line, f"stack process ended early: {lines}"
        lines.append(line)
    return proc, lines


def _tmpdir_of(lines: list[str]) -> Path:
    return Path(next(line for line in lines if line.startswith("tmpdir:")).split()[1])


def test_module_entry_stops_everything_on_sigterm() -> None:
    proc, lines = _run_stack_process(["-m", "cua_dev.stack"])
    tmpdir = _tmpdir_of(lines)
    assert processes_referencing(str(tmpdir))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert processes_referencing(str(tmpdir)) == set()
    assert not tmpdir.exists()


def test_forgotten_stack_is_stopped_at_interpreter_exit() -> None:
    code = (
        "from cua_dev.stack import LocalStack\n"
        "stack = LocalStack()\n"
        "stack.start()\n"
        "print('tmpdir:', stack.tmpdir, *sorted(stack.pids()), flush=True)\n"
    )
    proc, lines = _run_stack_process(["-c", code])
    pids = {int(pid) for pid in lines[-1].split()[2:]}
    assert len(pids) >= 4
    assert proc.wait(timeout=60) == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert not _tmpdir_of(lines).exists()


def test_services_die_with_a_killed_test_process() -> None:
    # No atexit and no `finally` runs on SIGKILL: the parent-death signal is the net.
    code = (
        "import os, signal\n"
        "from cua_dev.stack import LocalStack\n"
        "stack = LocalStack()\n"
        "stack.start()\n"
        "print('tmpdir:', stack.tmpdir, *sorted(stack.pids()), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc, lines = _run_stack_process(["-c", code])
    pids = {int(pid) for pid in lines[-1].split()[2:]}
    tmpdir = _tmpdir_of(lines)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    try:
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in pids if alive(pid)] == []
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
