"""DockerEngine on the real private dockerd and registry: every §2.3 key, pulls, failures.

Each config key is proven twice: the raw Engine API inspect (`cua_dev.unixhttp.RawEngine`) shows the
value Docker holds, and our inspect maps it back to the same `ContainerSpec` field.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import secrets
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cua.containers.spec import (
    ContainerSpec,
    DeviceMapping,
    LogDriver,
    LogMode,
    MountPoint,
    NetworkMode,
    PortMapping,
    ProcessConfig,
    Propagation,
    RestartPolicy,
    RestartPolicyType,
    size_text,
)
from cua.containers.state import ContainerStatus
from cua.engine.base import (
    ContainerNotFoundError,
    CreateFailedError,
    EngineError,
    EngineUnavailableError,
    PullFailedError,
)
from cua.engine.docker import DockerEngine
from cua.settings import RegistryCredentials
from cua_dev.images import ImageFactory
from cua_dev.stack import LocalStack
from cua_dev.tlsgen import generate_tls
from cua_dev.unixhttp import RawEngine
from tests.builders import log_config, memory_limits

pytestmark = pytest.mark.integration

Raw = dict[str, Any]


@pytest.fixture
def raw(docker_host: str) -> RawEngine:
    return RawEngine(docker_host)


@pytest.fixture(scope="session")
def app_image(image_factory: ImageFactory) -> str:
    return image_factory("engine/app", "1", load=True, marker="app", env={"FROM_IMAGE": "1"})


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def _create(
    engine: DockerEngine, raw: RawEngine, spec: ContainerSpec
) -> tuple[Raw, ContainerSpec]:
    await engine.create_container(spec.name, spec, {"cua.test": "keys"})
    raw_data: Raw = raw.container(spec.name)
    ours = (await engine.inspect_container(spec.name)).spec
    return raw_data, ours


def _base(image: str, **changes: Any) -> ContainerSpec:
    name = _name("key")
    spec = ContainerSpec(
        name=name, image=image, host_name=f"{name}-host", domain_name=f"{name}-domain"
    )
    return dataclasses.replace(spec, **changes)


# Each case: spec changes, a check on the raw inspect, a check on our mapped-back spec.
Case = tuple[dict[str, Any], Callable[[Raw], None], Callable[[ContainerSpec], None]]


def _case_image() -> Case:
    def raw_check(r: Raw) -> None:
        assert r["Config"]["Image"].endswith("/engine/app:1")

    return {}, raw_check, lambda s: None


def _case_env_cmd() -> Case:
    config = ProcessConfig(env=("A=1", "EMPTY="), cmd=("sleep", "1000"))

    def raw_check(r: Raw) -> None:
        assert "A=1" in r["Config"]["Env"]
        assert "EMPTY=" in r["Config"]["Env"]
        assert "FROM_IMAGE=1" in r["Config"]["Env"]  # the image's env is kept
        assert r["Config"]["Cmd"] == ["sleep", "1000"]
        assert r["Config"]["Entrypoint"] is None  # Kanto's cmd never overrides it

    def ours(s: ContainerSpec) -> None:
        assert s.env == ("A=1", "EMPTY=")  # the image's own env is not the container's
        assert s.cmd == ("sleep", "1000")

    return {"config": config}, raw_check, ours


def _case_ports() -> Case:
    ports = (
        PortMapping(host_port=18080, host_port_end=18082, container_port=80, host_ip="127.0.0.1"),
        PortMapping(host_port=15353, container_port=53, host_port_end=15353, protocol="udp"),
        PortMapping(host_port=18443, container_port=80, host_port_end=18443, host_ip="127.0.0.1"),
    )

    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["PortBindings"] == {
            "80/tcp": [
                {"HostIp": "127.0.0.1", "HostPort": "18080-18082"},
                {"HostIp": "127.0.0.1", "HostPort": "18443"},
            ],
            "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "15353"}],
        }
        assert set(r["Config"]["ExposedPorts"]) == {"80/tcp", "53/udp"}

    def ours(s: ContainerSpec) -> None:
        assert set(s.ports) == set(ports)

    return {"ports": ports}, raw_check, ours


def _case_devices() -> Case:
    devices = (
        DeviceMapping("/dev/null", "/dev/mynull", "rw"),
        DeviceMapping("/dev/zero", "/dev/z"),
    )

    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["Devices"] == [
            {
                "PathOnHost": "/dev/null",
                "PathInContainer": "/dev/mynull",
                "CgroupPermissions": "rw",
            },
            {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z", "CgroupPermissions": "rwm"},
        ]

    def ours(s: ContainerSpec) -> None:
        assert s.devices == devices

    return {"devices": devices}, raw_check, ours


def _case_network_host() -> Case:
    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["NetworkMode"] == "host"

    def ours(s: ContainerSpec) -> None:
        assert s.network is NetworkMode.HOST

    return {"network": NetworkMode.HOST}, raw_check, ours


def _case_network_bridge() -> Case:
    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["NetworkMode"] == "bridge"

    def ours(s: ContainerSpec) -> None:
        assert s.network is NetworkMode.BRIDGE

    return {"network": NetworkMode.BRIDGE}, raw_check, ours


def _case_privileged() -> Case:
    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["Privileged"] is True

    def ours(s: ContainerSpec) -> None:
        assert s.privileged

    return {"privileged": True}, raw_check, ours


def _case_terminal_interactive() -> Case:
    def raw_check(r: Raw) -> None:
        assert r["Config"]["Tty"] is True
        assert r["Config"]["OpenStdin"] is True

    def ours(s: ContainerSpec) -> None:
        assert s.terminal
        assert s.interactive

    return {"terminal": True, "interactive": True}, raw_check, ours


def _case_restart(kind: RestartPolicyType, retries: int) -> Case:
    policy = RestartPolicy(type=kind, max_retries=retries, timeout=30)

    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["RestartPolicy"] == {
            "Name": str(kind),
            "MaximumRetryCount": retries if kind is RestartPolicyType.ON_FAILURE else 0,
        }

    def ours(s: ContainerSpec) -> None:
        assert s.restart.type is kind
        assert s.restart.max_retries == (retries if kind is RestartPolicyType.ON_FAILURE else 0)
        assert s.restart.timeout == 0  # no Docker equivalent: kept in our labels only

    return {"restart": policy}, raw_check, ours


def _case_log_json_file() -> Case:
    logc = log_config(driver=LogDriver.JSON_FILE, max_files=3, max_size="1.5m", root_dir="/x")

    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["LogConfig"] == {
            "Type": "json-file",
            "Config": {"max-size": str(1536 * 1024), "max-file": "3"},
        }

    def ours(s: ContainerSpec) -> None:
        assert s.log.driver is LogDriver.JSON_FILE
        assert s.log.max_files == 3
        assert size_text(s.log.max_size) == "1536K"  # the same size, in its shortest exact form
        assert s.log.mode is LogMode.BLOCKING
        assert s.log.root_dir == ""  # logPath: no Docker equivalent, kept in our labels

    return {"log": logc}, raw_check, ours


def _case_log_non_blocking() -> Case:
    logc = log_config(mode=LogMode.NON_BLOCKING, max_buffer_size="2M")

    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["LogConfig"] == {
            "Type": "json-file",
            "Config": {
                "max-size": str(100 * 1024 * 1024),
                "max-file": "2",
                "mode": "non-blocking",
                "max-buffer-size": str(2 * 1024 * 1024),
            },
        }

    def ours(s: ContainerSpec) -> None:
        assert s.log == log_config(mode=LogMode.NON_BLOCKING, max_buffer_size="2M")

    return {"log": logc}, raw_check, ours


def _case_log_none() -> Case:
    logc = log_config(driver=LogDriver.NONE, max_files=0, max_size="")

    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["LogConfig"] == {"Type": "none", "Config": {}}

    def ours(s: ContainerSpec) -> None:
        assert s.log.driver is LogDriver.NONE
        assert (s.log.max_files, s.log.max_size) == (0, None)

    return {"log": logc}, raw_check, ours


def _case_memory() -> Case:
    resources = memory_limits(memory="50M", memory_reservation="10.5m", memory_swap="-1")

    def raw_check(r: Raw) -> None:
        host = r["HostConfig"]
        assert host["Memory"] == 50 * 1024 * 1024
        assert host["MemoryReservation"] == 10752 * 1024
        assert host["MemorySwap"] == -1

    def ours(s: ContainerSpec) -> None:
        assert s.resources == memory_limits(
            memory="50M", memory_reservation="10752K", memory_swap="-1"
        )

    return {"resources": resources}, raw_check, ours


def _case_memory_default_swap() -> Case:
    def raw_check(r: Raw) -> None:
        assert r["HostConfig"]["Memory"] == 1024**3
        assert r["HostConfig"]["MemorySwap"] == 2 * 1024**3  # Docker's and CM's default

    def ours(s: ContainerSpec) -> None:
        assert s.resources == memory_limits(memory="1G", memory_swap="2G")

    return {"resources": memory_limits(memory="1g")}, raw_check, ours


def _case_extra_hosts() -> Case:
    hosts = ("literal:192.0.2.10", "gw:host_ip", "loop:host_ip_lo", "peer:container_nobody-host")

    def raw_check(r: Raw) -> None:
        # host_ip -> Docker's host-gateway; host_ip_lo -> lo's address; a container_ target
        # that has no address is left out (Docker fixes extra hosts at create).
        assert r["HostConfig"]["ExtraHosts"] == [
            "literal:192.0.2.10",
            "gw:host-gateway",
            "loop:127.0.0.1",
        ]

    def ours(s: ContainerSpec) -> None:
        assert s.extra_hosts == ("literal:192.0.2.10", "gw:host_ip", "loop:127.0.0.1")

    return {"extra_hosts": hosts}, raw_check, ours


def _case_host_and_domain_name() -> Case:
    def raw_check(r: Raw) -> None:
        assert r["Config"]["Hostname"].endswith("-host")
        assert r["Config"]["Domainname"].endswith("-domain")
        assert r["Config"]["Hostname"] == r["Name"].removeprefix("/") + "-host"

    def ours(s: ContainerSpec) -> None:
        assert s.host_name == f"{s.name}-host"
        assert s.domain_name == f"{s.name}-domain"

    return {}, raw_check, ours


CASES: dict[str, Callable[[], Case]] = {
    "image": _case_image,
    "env+cmd": _case_env_cmd,
    "port": _case_ports,
    "device": _case_devices,
    "network=host": _case_network_host,
    "network=bridge": _case_network_bridge,
    "privileged": _case_privileged,
    "terminal+interactive": _case_terminal_interactive,
    "restart=on-failure": lambda: _case_restart(RestartPolicyType.ON_FAILURE, 5),
    "restart=always": lambda: _case_restart(RestartPolicyType.ALWAYS, 0),
    "restart=no": lambda: _case_restart(RestartPolicyType.NO, 0),
    "restart=unless-stopped": lambda: _case_restart(RestartPolicyType.UNLESS_STOPPED, 0),
    "log=json-file": _case_log_json_file,
    "logMode=non-blocking": _case_log_non_blocking,
    "log=none": _case_log_none,
    "memory": _case_memory,
    "memory-default-swap": _case_memory_default_swap,
    "host": _case_extra_hosts,
    "hostName+domainName": _case_host_and_domain_name,
}


@pytest.mark.parametrize("key", list(CASES))
async def test_each_config_key_is_held_by_the_engine(
    key: str, engine: DockerEngine, raw: RawEngine, app_image: str
) -> None:
    changes, raw_check, ours_check = CASES[key]()
    spec = _base(app_image, **changes)
    raw_data, ours = await _create(engine, raw, spec)
    raw_check(raw_data)
    ours_check(ours)
    assert ours.name == spec.name
    assert ours.image == app_image


async def test_bind_mounts_with_propagation(
    engine: DockerEngine, raw: RawEngine, app_image: str, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mounts = (
        MountPoint(str(tmp_path / "a"), "/data/a"),
        MountPoint(str(tmp_path / "b"), "/data/b", Propagation.RSLAVE),
    )
    spec = _base(app_image, mounts=mounts)
    raw_data, ours = await _create(engine, raw, spec)
    assert raw_data["HostConfig"]["Mounts"] == [
        {
            "Type": "bind",
            "Source": str(tmp_path / "a"),
            "Target": "/data/a",
            "BindOptions": {"Propagation": "rprivate"},
        },
        {
            "Type": "bind",
            "Source": str(tmp_path / "b"),
            "Target": "/data/b",
            "BindOptions": {"Propagation": "rslave"},
        },
    ]
    assert ours.mounts == mounts


async def test_a_bind_mount_is_in_the_started_container(
    engine: DockerEngine, raw: RawEngine, app_image: str, tmp_path: Path
) -> None:
    # rslave/rshared need a slave/shared mount on the host side to *start*, which depends
    # on the host; rprivate always starts.
    spec = _base(app_image, mounts=(MountPoint(str(tmp_path), "/data"),))
    await engine.create_container(spec.name, spec, {})
    await engine.start_container(spec.name)
    started: Raw = raw.container(spec.name)
    assert [(m["Source"], m["Destination"], m["Propagation"]) for m in started["Mounts"]] == [
        (str(tmp_path), "/data", "rprivate")
    ]


async def test_bind_mount_of_a_missing_source_fails_at_create(
    engine: DockerEngine, app_image: str, tmp_path: Path
) -> None:
    missing = tmp_path / "not-there"
    spec = _base(app_image, mounts=(MountPoint(str(missing), "/data"),))
    with pytest.raises(CreateFailedError, match="not-there"):
        await engine.create_container(spec.name, spec, {})


async def test_extra_host_on_a_missing_interface_fails_at_create(
    engine: DockerEngine, app_image: str
) -> None:
    spec = _base(app_image, extra_hosts=("x:host_ip_nosuchif0",))
    with pytest.raises(CreateFailedError, match="nosuchif0"):
        await engine.create_container(spec.name, spec, {})


async def test_container_that_exits_maps_exit_code_and_restart_count(
    engine: DockerEngine, app_image: str
) -> None:
    spec = _base(
        app_image,
        config=ProcessConfig(cmd=("sh", "-c", "exit 3")),
        restart=RestartPolicy(type=RestartPolicyType.ON_FAILURE, max_retries=1),
    )
    await engine.create_container(spec.name, spec, {})
    await engine.start_container(spec.name)
    async with asyncio.timeout(30):  # a hang guard: Docker retries once, then gives up
        while True:
            details = await engine.inspect_container(spec.name)
            if details.state.restart_count == 1 and details.state.status in (
                ContainerStatus.EXITED,
            ):
                break
            await asyncio.sleep(0.1)
    assert details.state.exit_code == 3
    assert details.state.finished_at.endswith("Z")
    assert details.state.started_at.endswith("Z")


async def test_api_version_is_negotiated(engine: DockerEngine) -> None:
    await engine.list_containers()
    assert engine.api_version == "1.41"  # min(dockerd 20.10's 1.41, ours)


async def test_the_engine_platform_is_read_by_the_negotiation_without_a_call_of_its_own(
    engine: DockerEngine, raw: RawEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's downloads ask for the platform once per image: the negotiation's
    /version answers it (the README's agent-download figures count on that)."""
    version = raw.json("GET", "/version")

    async def no_call(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"an engine call: {args}")

    await engine.list_containers()  # negotiates
    monkeypatch.setattr(engine, "_call", no_call)
    platform = await engine.engine_platform()
    assert (platform.os, platform.architecture) == (version["Os"], version["Arch"])


# --- pulls ----------------------------------------------------------------------------------


async def test_pull_reports_progress_over_several_events(
    engine: DockerEngine, raw: RawEngine, image_factory: ImageFactory
) -> None:
    image = image_factory("engine/big", "1", marker="big", size_mb=5.0)
    raw.forget(image)
    progress = [p async for p in engine.pull_image(image)]
    assert progress[-1].complete
    assert all(not p.complete for p in progress[:-1])
    # Docker rate-limits "Downloading" messages (loopback pulls are fast), so how many come
    # depends on timing; at least one lands mid-layer (the first after 512 KiB).
    in_flight = [p for p in progress if 0 < p.done < p.total]
    assert in_flight, progress
    assert len(progress) >= 3, progress
    dones = [p.done for p in progress]
    assert dones == sorted(dones)
    # Layers that already exist locally (the shared busybox base) are not downloaded and
    # not counted; the ~3 MB padding layer is.
    assert progress[-1].total >= 2_500_000
    assert progress[-1].done == progress[-1].total
    assert await engine.image_present(image)


async def test_pull_through_a_mirror_tags_the_desired_reference(
    clean_engine: LocalStack,
    docker_host: str,
    registry: str,
    raw: RawEngine,
    image_factory: ImageFactory,
) -> None:
    pushed = image_factory("eclipse/x", "1", marker="mirror")
    desired = "ghcr.io/eclipse/x:1"
    raw.forget(pushed, desired)
    engine = DockerEngine(docker_host, mirrors={"ghcr.io": registry}, timeout=20)
    try:
        progress = [p async for p in engine.pull_image(desired)]
        assert progress[-1].complete
        assert progress[-1].image == desired
        assert await engine.image_present(desired)
        tags = raw.image(desired)["RepoTags"]
        assert tags == [desired]  # the mirror's name is not left behind
        name = _name("mirrored")
        await engine.create_container(name, ContainerSpec(name=name, image=desired), {})
        assert (await engine.inspect_container(name)).image == desired
        assert [c.image for c in await engine.list_containers() if c.name == name] == [desired]
    finally:
        await engine.close()


async def test_an_image_pinned_by_digest_is_usable_after_a_pull_through_a_mirror(
    clean_engine: LocalStack,
    docker_host: str,
    registry: str,
    raw: RawEngine,
    image_factory: ImageFactory,
) -> None:
    # A digest cannot be tagged, so the image keeps the mirror's name; it must still count
    # as present (no pull on every DOWNLOAD) and a container must be creatable from it.
    pushed = image_factory("eclipse/pinned", "1", marker="pinned")
    raw.pull(pushed)
    digest = raw.image(pushed)["RepoDigests"][0].split("@")[1]
    desired = f"ghcr.io/eclipse/pinned@{digest}"
    raw.forget(pushed)
    engine = DockerEngine(docker_host, mirrors={"ghcr.io": registry}, timeout=20)
    try:
        assert not await engine.image_present(desired)
        progress = [p async for p in engine.pull_image(desired)]
        assert progress[-1].complete
        assert await engine.image_present(desired)
        name = _name("pinned")
        container_id = await engine.create_container(
            name, ContainerSpec(name=name, image=desired), {}
        )
        assert (await engine.inspect_container(container_id)).name == name
    finally:
        await engine.close()


@pytest.mark.parametrize("other_tag", [False, True], ids=["only-tag", "other-tag-stays"])
async def test_a_local_pull_leaves_only_the_wanted_name(
    engine: DockerEngine,
    registry: str,
    raw: RawEngine,
    image_factory: ImageFactory,
    *,
    other_tag: bool,
) -> None:
    # `pull_local` (what the agent's downloads hand to the engine): the pulled name and the
    # repo digest its pull recorded go. The engine drops the digest with the repository's
    # last tag; with another tag of that repository left, the agent drops it itself.
    pushed = image_factory("engine/local-pull", "1", marker=f"local-pull-{other_tag}")
    repository = pushed.rpartition(":")[0]
    wanted = f"{registry}/engine/wanted-{secrets.token_hex(4)}:1"
    raw.forget(pushed, f"{repository}:2")
    if other_tag:
        raw.pull(pushed)
        raw.json("POST", f"/images/{pushed}/tag", repo=repository, tag="2")
    try:
        await engine.pull_local(pushed, wanted)
        image = raw.image(wanted)
        kept = [f"{repository}:2"] if other_tag else []
        assert sorted(image["RepoTags"]) == sorted([wanted, *kept])
        assert not [d for d in image["RepoDigests"] or [] if d.startswith(f"{repository}@")]
    finally:
        raw.forget(wanted, f"{repository}:2")


async def test_pull_of_a_missing_image_is_a_clear_pull_failure(
    engine: DockerEngine, registry: str
) -> None:
    image = f"{registry}/engine/nothing:1"
    async with asyncio.timeout(60):  # hang guard
        with pytest.raises(PullFailedError) as raised:
            async for _ in engine.pull_image(image):
                pass
    assert str(raised.value).startswith(f"cannot pull image {image}: ")
    assert "manifest unknown" in str(raised.value) or "not found" in str(raised.value)


async def test_pull_from_a_stopped_registry_is_a_clear_pull_failure(
    engine: DockerEngine,
    clean_engine: LocalStack,
    raw: RawEngine,
    image_factory: ImageFactory,
) -> None:
    image = image_factory("engine/offline", "1", marker="offline")
    raw.forget(image)
    clean_engine.stop_registry()
    try:
        async with asyncio.timeout(60):  # hang guard
            with pytest.raises(PullFailedError) as raised:
                async for _ in engine.pull_image(image):
                    pass
    finally:
        clean_engine.start_registry()
    assert str(raised.value).startswith(f"cannot pull image {image}: ")
    assert "connection refused" in str(raised.value)


async def test_credentials_are_accepted_and_never_logged(
    clean_engine: LocalStack,
    raw: RawEngine,
    image_factory: ImageFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = clean_engine.registry
    secret = "s3cr3t-" + secrets.token_hex(4)
    image = image_factory("engine/private", "1", marker="private")
    raw.forget(image)
    credentials = {registry: RegistryCredentials("robot", secret)}
    engine = DockerEngine(clean_engine.docker_host, credentials=credentials, timeout=20)
    caplog.set_level(logging.DEBUG)
    try:
        progress = [p async for p in engine.pull_image(image)]
        assert progress[-1].complete
        assert secret not in repr(engine)
        assert secret not in repr(credentials)
        with pytest.raises(PullFailedError) as raised:
            async for _ in engine.pull_image(f"{registry}/engine/nothing:1"):
                pass
        assert secret not in str(raised.value)
    finally:
        await engine.close()
    assert secret not in caplog.text


async def _http_server(
    answer: Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]],
    listener: socket.socket,
) -> asyncio.Server:
    """An HTTP/1.1 server on the bound `listener` (keep-alive, no request bodies):
    `answer(request line, headers)` gives the status, headers and body of each answer."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *fields = head.strip().split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)
                }
                status, extra, body = answer(line, headers)
                out = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
                out += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(out.encode() + b"\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, sock=listener)


@contextlib.asynccontextmanager
async def _registry_demanding_auth(stack: LocalStack) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback "registry" that demands Basic auth: its host, and the logins it saw. It
    listens inside the stack's network namespace, where dockerd resolves 127.0.0.1."""
    seen: list[str] = []

    def answer(_line: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        auth = headers.get("authorization", "")
        if not auth:
            return 401, {"WWW-Authenticate": 'Basic realm="test"'}, b""
        seen.append(auth)
        unknown = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
        return 404, {"Content-Type": "application/json"}, json.dumps(unknown).encode()

    listener = stack.netns.new_socket()
    listener.bind(("127.0.0.1", 0))
    server = await _http_server(answer, listener)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


async def _failing_pull(engine: DockerEngine, image: str) -> PullFailedError:
    try:
        async with asyncio.timeout(60):  # hang guard
            with pytest.raises(PullFailedError) as raised:
                async for _ in engine.pull_image(image):
                    pass
    finally:
        await engine.close()
    return raised.value


async def test_credentials_reach_the_registry(clean_engine: LocalStack) -> None:
    secret = "pw-" + secrets.token_hex(4)
    async with _registry_demanding_auth(clean_engine) as (host, seen):
        engine = DockerEngine(
            clean_engine.docker_host,
            credentials={host: RegistryCredentials("robot", secret)},
            timeout=20,
        )
        error = await _failing_pull(engine, f"{host}/engine/private:1")
    expected = "Basic " + base64.b64encode(f"robot:{secret}".encode()).decode()
    assert expected in seen
    assert secret not in str(error)


async def test_a_mirror_gets_its_own_login_never_the_mirrored_registrys(
    clean_engine: LocalStack,
) -> None:
    upstream_secret = "up-" + secrets.token_hex(4)
    mirror_secret = "mi-" + secrets.token_hex(4)
    async with _registry_demanding_auth(clean_engine) as (host, seen):
        only_upstream = {"ghcr.io": RegistryCredentials("robot", upstream_secret)}
        engine = DockerEngine(
            clean_engine.docker_host,
            mirrors={"ghcr.io": host},
            credentials=only_upstream,
            timeout=20,
        )
        await _failing_pull(engine, "ghcr.io/engine/private:1")
        assert seen == []  # the mirror never saw ghcr.io's login
        both = {**only_upstream, host: RegistryCredentials("mirror", mirror_secret)}
        engine = DockerEngine(
            clean_engine.docker_host, mirrors={"ghcr.io": host}, credentials=both, timeout=20
        )
        await _failing_pull(engine, "ghcr.io/engine/private:1")
    assert set(seen) == {"Basic " + base64.b64encode(f"mirror:{mirror_secret}".encode()).decode()}


# --- the engine going away --------------------------------------------------------------------


async def test_missing_socket_is_engine_unavailable(tmp_path: Path) -> None:
    engine = DockerEngine(f"unix://{tmp_path}/nothing.sock", timeout=2)
    try:
        async with asyncio.timeout(10):  # hang guard
            with pytest.raises(EngineUnavailableError, match=r"nothing\.sock"):
                await engine.list_containers()
            with pytest.raises(EngineUnavailableError):
                async for _ in engine.pull_image("x/y:1"):
                    pass
            with pytest.raises(EngineUnavailableError):
                async for _ in engine.events():
                    pass
    finally:
        await engine.close()


async def test_a_pull_that_stalls_fails_instead_of_hanging(tmp_path: Path) -> None:
    """An engine that starts a pull and then reports nothing: a pull failure, not a hang."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET /version "):
                    body = b'{"ApiVersion": "1.41", "MinAPIVersion": "1.12"}'
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    writer.write(body)
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                line = b'{"status":"Pulling from x/y","id":"1"}\r\n'
                writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                await writer.drain()
                await reader.read()  # then silence, until the client leaves
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    path = tmp_path / "stalling.sock"
    server = await asyncio.start_unix_server(serve, path=str(path))
    engine = DockerEngine(f"unix://{path}", timeout=2, pull_stall_timeout=1)
    try:
        async with asyncio.timeout(10):  # hang guard
            with pytest.raises(PullFailedError, match="no progress for 1 s"):
                async for _ in engine.pull_image("x/y:1"):
                    pass
    finally:
        await engine.close()
        server.close()


async def test_a_registry_that_never_answers_is_a_pull_failure(clean_engine: LocalStack) -> None:
    """The engine waits on the registry before it says anything: a pull failure naming the
    image, not "cannot reach the container engine" (the engine is fine)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, answer nothing

    listener = clean_engine.netns.new_socket()  # where dockerd resolves 127.0.0.1
    listener.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(silent, sock=listener)
    port = server.sockets[0].getsockname()[1]
    engine = DockerEngine(clean_engine.docker_host, timeout=20, pull_stall_timeout=2)
    try:
        async with asyncio.timeout(30):  # hang guard
            with pytest.raises(PullFailedError) as raised:
                async for _ in engine.pull_image(f"127.0.0.1:{port}/engine/silent:1"):
                    pass
        assert str(raised.value) == (
            f"cannot pull image 127.0.0.1:{port}/engine/silent:1: no progress for 2 s"
        )
        assert await engine.list_containers() is not None  # the engine is fine
    finally:
        await engine.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_socket_that_never_answers_is_engine_unavailable(tmp_path: Path) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, read nothing, answer nothing

    path = tmp_path / "silent.sock"
    server = await asyncio.start_unix_server(silent, path=str(path))
    engine = DockerEngine(f"unix://{path}", timeout=1)
    try:
        async with asyncio.timeout(10):  # hang guard
            with pytest.raises(EngineUnavailableError, match="no answer within 1 s"):
                await engine.inspect_container("anything")
            with pytest.raises(EngineUnavailableError):
                await engine.start_container("anything")
        assert accepted
    finally:
        await engine.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_name_cannot_reach_another_engine_endpoint(
    engine: DockerEngine, app_image: str
) -> None:
    """Names and references are single path segments: `..`, `/` and `?` stay inside."""
    assert await engine.image_present(app_image)  # a reference with `/` and `:` still works
    # Unencoded, this is GET /images/get?names=<image>/json: an image export.
    with pytest.raises(EngineError, match=r"a path segment is '\.' or '\.\.'"):
        await engine.image_present(f"x/../get?names={app_image}")
    # Unencoded, this is GET /images/json: the image list.
    with pytest.raises(EngineError, match=r"a path segment is '\.' or '\.\.'"):
        await engine.inspect_container("x/../../images")
    # Unencoded, `?` would start a query string (the engine would look up image `x`).
    with pytest.raises(EngineError, match=r"no such image: x\?all=1: invalid reference format"):
        await engine.image_present("x?all=1")
    with pytest.raises(ContainerNotFoundError):
        await engine.inspect_container("x?size=1")


# --- TCP and TLS engines ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _tcp_front(
    socket_path: str, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback TCP (or TLS) listener in front of the private dockerd's unix socket, as a
    remote engine would be: its `host:port`, and the bytes clients sent through it."""
    sent: list[bytes] = []
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[bytes] | None
    ) -> None:
        try:
            while data := await reader.read(65536):
                if seen is not None:
                    seen.append(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        engine_reader, engine_writer = await asyncio.open_unix_connection(socket_path)
        for task in (
            asyncio.create_task(pipe(reader, engine_writer, sent)),
            asyncio.create_task(pipe(engine_reader, writer, None)),
        ):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", sent
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _cert_dir(tmp_path: Path, ca: Path, cert: Path, key: Path) -> Path:
    """A DOCKER_CERT_PATH directory, laid out as the docker CLI expects it."""
    directory = tmp_path / "docker-certs"
    directory.mkdir()
    for source, name in ((ca, "ca.pem"), (cert, "cert.pem"), (key, "key.pem")):
        shutil.copy(source, directory / name)
    return directory


async def test_a_tls_engine_is_reached_the_docker_cli_way(
    clean_engine: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = clean_engine.tls
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca_cert))
    server.load_cert_chain(str(tls.server_cert), str(tls.server_key))
    server.verify_mode = ssl.CERT_REQUIRED  # the engine demands the client's certificate
    certs = _cert_dir(tmp_path, tls.ca_cert, tls.client_cert, tls.client_key)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    async with _tcp_front(clean_engine.docker_host.removeprefix("unix://"), server) as (
        host,
        sent,
    ):
        engine = DockerEngine(f"tcp://{host}", timeout=10)
        try:
            assert engine.url == f"https://{host}"
            # Through TLS with the client's certificate (the listener demands one).
            assert isinstance(await engine.list_containers(), list)
        finally:
            await engine.close()
        assert any(b"GET /v1.41/containers/json" in chunk for chunk in sent)
        # A CA that did not sign the engine's certificate: refused, as the docker CLI does.
        other = generate_tls(tmp_path / "other")
        monkeypatch.setenv(
            "DOCKER_CERT_PATH",
            str(_cert_dir(tmp_path / "other", other.ca_cert, other.client_cert, other.client_key)),
        )
        engine = DockerEngine(f"tcp://{host}", timeout=10)
        try:
            with pytest.raises(EngineUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
                await engine.list_containers()
        finally:
            await engine.close()


async def test_credentials_for_a_plain_tcp_engine_are_warned_about(
    clean_engine: LocalStack, image_factory: ImageFactory, caplog: pytest.LogCaptureFixture
) -> None:
    registry = clean_engine.registry
    secret = "tcp-" + secrets.token_hex(4)
    image = image_factory("engine/overtcp", "1", marker="overtcp")
    RawEngine(clean_engine.docker_host).forget(image)
    caplog.set_level(logging.WARNING, logger="cua.engine.docker")
    async with _tcp_front(clean_engine.docker_host.removeprefix("unix://")) as (host, sent):
        engine = DockerEngine(
            f"tcp://{host}", credentials={registry: RegistryCredentials("robot", secret)}
        )
        try:
            progress = [p async for p in engine.pull_image(image)]
            assert progress[-1].complete
        finally:
            await engine.close()
    assert b"X-Registry-Auth" in b"".join(sent)  # it did travel, in the clear
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("plain HTTP" in w and registry in w for w in warnings), warnings
    assert secret not in caplog.text
