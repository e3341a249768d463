"""Pure parts of the Docker adapter: sizes, references, auth header, body <-> spec mapping."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from cua.containers.gosyntax import Size
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
)
from cua.containers.state import ContainerStatus
from cua.engine.base import ContainerStateError, CreateFailedError, EventAction, NameConflictError
from cua.engine.docker import DockerEngine, _Failure, interface_ipv4
from cua.engine.docker_mapping import (
    ImageReference,
    address_from_inspect,
    create_body,
    docker_time,
    engine_url,
    event_from_docker,
    log_lines,
    registry_auth_header,
    spec_from_inspect,
    status_from_docker,
    track_layer,
)
from cua.engine.transport import APIError, engine_address
from cua.settings import RegistryCredentials
from tests.builders import log_config, memory_limits

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("100M", 100 * 1024**2),
        ("100m", 100 * 1024**2),
        ("1.5g", 1536 * 1024**2),
        ("200 m", 200 * 1024**2),
        ("3k", 3072),
        ("1G", 1024**3),
    ],
)
def test_kanto_sizes_are_powers_of_1024(text: str, count: int) -> None:
    assert Size.parse(text).bytes == count


def test_engine_sizes_are_the_validated_sizes() -> None:
    # CM reads sizes as float64: this value passes the 3M minimum, so 3M is what is sent.
    assert Size.parse("2.99999999999999999999M").bytes == 3 * 1024**2


@pytest.mark.parametrize("text", ["1000", "", "1.5", "10MB", "1.2.3m", "-1m", " 1m"])
def test_invalid_kanto_sizes_name_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        Size.parse(text)


@pytest.mark.parametrize(
    ("count", "text"),
    [(100 * 1024**2, "100M"), (2 * 1024**3, "2G"), (1536 * 1024, "1536K"), (512, "0.5K")],
)
def test_bytes_to_the_shortest_exact_size(count: int, text: str) -> None:
    assert Size.from_bytes(count).text == text
    assert Size.parse(text).bytes == count


def test_engine_sizes_accept_bytes_and_units() -> None:
    assert Size.from_engine("104857600").bytes == 100 * 1024**2
    assert Size.from_engine("10m").bytes == 10 * 1024**2
    assert Size.from_engine("10MiB").bytes == 10 * 1024**2


@pytest.mark.parametrize(
    ("reference", "registry", "path", "tag", "repository"),
    [
        ("ghcr.io/eclipse/x:1", "ghcr.io", "eclipse/x", "1", "ghcr.io/eclipse/x"),
        ("127.0.0.1:5000/a/b:2.0", "127.0.0.1:5000", "a/b", "2.0", "127.0.0.1:5000/a/b"),
        ("localhost/app", "localhost", "app", "", "localhost/app"),
        ("busybox:1.36", "docker.io", "busybox", "1.36", "busybox"),
        ("library/busybox", "docker.io", "library/busybox", "", "library/busybox"),
        ("registry:5000/app", "registry:5000", "app", "", "registry:5000/app"),
    ],
)
def test_image_references(
    reference: str, registry: str, path: str, tag: str, repository: str
) -> None:
    parsed = ImageReference.parse(reference)
    assert (parsed.registry, parsed.path, parsed.tag, parsed.repository) == (
        registry,
        path,
        tag,
        repository,
    )
    assert str(parsed) == reference


def test_digest_references_and_mirrors() -> None:
    digest = "sha256:" + "a" * 64
    parsed = ImageReference.parse(f"ghcr.io/x/y@{digest}")
    assert (parsed.digest, parsed.tag) == (digest, "")
    assert str(parsed.on_registry("127.0.0.1:5000")) == f"127.0.0.1:5000/x/y@{digest}"
    hub = ImageReference.parse("busybox:1")
    assert str(hub.on_registry("mirror:5000")) == "mirror:5000/library/busybox:1"


def test_registry_auth_header_is_base64url_json() -> None:
    header = registry_auth_header(RegistryCredentials("robot", "p+/w=?"), "ghcr.io")
    assert "+" not in header
    assert "/" not in header
    decoded = json.loads(base64.urlsafe_b64decode(header))
    assert decoded == {"username": "robot", "password": "p+/w=?", "serveraddress": "ghcr.io"}


def test_credentials_never_in_reprs() -> None:
    credentials = RegistryCredentials("robot", "topsecret")
    engine = DockerEngine("unix:///x.sock", credentials={"ghcr.io": credentials})
    assert "topsecret" not in repr(credentials)
    assert "topsecret" not in repr(engine)
    assert "topsecret" not in str(vars(engine).get("mirrors"))


def test_engine_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert engine_url(None) == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///from/env.sock")
    assert engine_url(None) == "unix:///from/env.sock"
    assert engine_url("unix:///explicit.sock") == "unix:///explicit.sock"
    assert engine_url("/run/docker.sock") == "unix:///run/docker.sock"
    assert engine_url("tcp://127.0.0.1:2375") == "http://127.0.0.1:2375"
    assert engine_url("http://127.0.0.1:2375") == "http://127.0.0.1:2375"
    # The docker CLI's way to ask for TLS: tcp:// is then HTTPS.
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    assert engine_url("tcp://127.0.0.1:2376") == "https://127.0.0.1:2376"
    assert engine_url("unix:///x.sock") == "unix:///x.sock"


def test_engine_addresses() -> None:
    unix = engine_address("unix:///run/d.sock", {})
    assert (unix.socket_path, unix.tls, unix.plain_tcp) == ("/run/d.sock", None, False)
    assert unix.host_header == "docker"
    plain = engine_address("http://10.0.0.1", {})
    assert (plain.host, plain.port, plain.plain_tcp) == ("10.0.0.1", 2375, True)
    with pytest.raises(OSError, match="No such file"):  # no ca.pem there
        engine_address("https://h:1", {"DOCKER_CERT_PATH": "/nonexistent"})
    with pytest.raises(ValueError, match="ftp"):
        engine_address("ftp://h", {})


def test_api_failures_read_as_engine_errors() -> None:
    failure = _Failure(
        "cannot do x",
        CreateFailedError,
        by_status={404: None, 409: ContainerStateError},
        by_text={"same name": None, "special": NameConflictError("taken")},
    )
    assert failure.error(APIError(404, "gone")) is None
    conflict = failure.error(APIError(409, "busy"))
    assert isinstance(conflict, ContainerStateError)
    assert str(conflict) == "cannot do x: busy"
    assert failure.error(APIError(500, "has the same name")) is None
    assert str(failure.error(APIError(500, "a special case"))) == "taken"
    other = failure.error(APIError(500, "boom"))
    assert isinstance(other, CreateFailedError)
    assert str(other) == "cannot do x: boom"


@pytest.mark.parametrize(
    ("docker", "kanto"),
    [
        ("created", ContainerStatus.CREATED),
        ("running", ContainerStatus.RUNNING),
        ("restarting", ContainerStatus.RUNNING),
        ("paused", ContainerStatus.PAUSED),
        ("exited", ContainerStatus.EXITED),
        ("dead", ContainerStatus.DEAD),
        ("removing", ContainerStatus.DEAD),
        ("weird", ContainerStatus.UNKNOWN),
    ],
)
def test_state_mapping(docker: str, kanto: ContainerStatus) -> None:
    assert status_from_docker(docker) is kanto


def test_docker_zero_time_is_never() -> None:
    assert docker_time("0001-01-01T00:00:00Z") == ""
    assert docker_time("2024-05-01T10:00:00.123456789Z") == "2024-05-01T10:00:00.123456789Z"


FULL = ContainerSpec(
    name="full",
    image="ghcr.io/x/full:1",
    host_name="full-host",
    domain_name="full-domain",
    config=ProcessConfig(env=("A=1",), cmd=("run", "--fast")),
    devices=(DeviceMapping("/dev/ttyUSB0", "/dev/ttyUSB0", "rw"),),
    ports=(PortMapping(80, 8080, 82, "127.0.0.1", "tcp"),),
    mounts=(MountPoint("/data", "/var/data", Propagation.RSHARED),),
    extra_hosts=("db:192.0.2.1", "gw:host-gateway"),
    network=NetworkMode.BRIDGE,
    terminal=True,
    interactive=True,
    restart=RestartPolicy(RestartPolicyType.ON_FAILURE, 5, 0),
    log=log_config(
        LogDriver.JSON_FILE, 3, max_size="10M", mode=LogMode.NON_BLOCKING, max_buffer_size="2M"
    ),
    resources=memory_limits("256M", "128M", "512M"),
)


def _inspect_from_body(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """What Docker's inspect holds for a create body (the fields we read)."""
    host = body.pop("HostConfig")
    return {"Name": "/" + name, "Config": body, "HostConfig": host}


def test_create_body_maps_back_to_the_same_spec() -> None:
    body = create_body(FULL, {"l": "v"}, list(FULL.extra_hosts))
    assert body["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "80-82"}]
    }
    assert body["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert body["HostConfig"]["LogConfig"]["Config"]["max-buffer-size"] == str(2 * 1024**2)
    assert "Entrypoint" not in body
    back = spec_from_inspect(_inspect_from_body("full", body), image=None)
    assert back == dataclasses.replace(FULL, extra_hosts=("db:192.0.2.1", "gw:host_ip"))


def test_max_retries_only_for_on_failure() -> None:
    spec = ContainerSpec(name="a", image="i", restart=RestartPolicy(RestartPolicyType.ALWAYS, 3))
    body = create_body(spec, {}, [])
    assert body["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}


def test_image_env_and_cmd_are_not_the_containers() -> None:
    body = create_body(ContainerSpec(name="a", image="i"), {}, [])
    inspect = _inspect_from_body("a", body)
    inspect["Config"]["Env"] = ["PATH=/bin"]
    inspect["Config"]["Cmd"] = ["sleep", "1"]
    image = {"Config": {"Env": ["PATH=/bin"], "Cmd": ["sleep", "1"]}}
    assert spec_from_inspect(inspect, image).config is None


def test_binds_of_containers_created_by_others() -> None:
    inspect = {
        "Name": "/other",
        "Config": {"Image": "x"},
        "HostConfig": {"Binds": ["/a:/b:ro,rslave", "/c:/d", "volume:/e"], "Mounts": None},
    }
    spec = spec_from_inspect(inspect, None)
    assert spec.mounts == (
        MountPoint("/a", "/b", Propagation.RSLAVE),
        MountPoint("/c", "/d", Propagation.RPRIVATE),
    )
    assert spec.restart.type is RestartPolicyType.NO
    assert spec.resources is None


def test_pull_progress_sums_layers() -> None:
    layers: dict[str, tuple[int, int]] = {}
    messages: list[dict[str, Any]] = [
        {"status": "Pulling from x/y", "id": "1"},
        {"status": "Pulling fs layer", "id": "a", "progressDetail": {}},
        {"status": "Pulling fs layer", "id": "b", "progressDetail": {}},
        {"status": "Downloading", "id": "a", "progressDetail": {"current": 10, "total": 100}},
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 5, "total": 50}},
        {"status": "Download complete", "id": "a", "progressDetail": {}},
    ]
    for message in messages:
        track_layer(layers, message)
    assert layers == {"a": (100, 100), "b": (5, 50)}


def test_events_map_actions() -> None:
    raw = {
        "Type": "container",
        "Action": "health_status: healthy",
        "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "x"}},
    }
    event = event_from_docker(raw)
    assert (event.action, event.raw_action, event.name) == (
        EventAction.OTHER,
        "health_status: healthy",
        "web",
    )
    raw["Action"] = "destroy"
    assert event_from_docker(raw).action is EventAction.DESTROY


def test_interface_address_is_read_without_traffic() -> None:
    assert interface_ipv4("lo") == "127.0.0.1"
    with pytest.raises(CreateFailedError, match="nosuchif0"):
        interface_ipv4("nosuchif0")


def test_address_is_the_bridge_address_else_the_first_networks() -> None:
    bridge = {"NetworkSettings": {"IPAddress": "192.0.2.2", "Networks": {}}}
    other = {"NetworkSettings": {"IPAddress": "", "Networks": {"n": {"IPAddress": "192.0.2.3"}}}}
    assert address_from_inspect(bridge) == "192.0.2.2"
    assert address_from_inspect(other) == "192.0.2.3"
    assert address_from_inspect({"NetworkSettings": {"IPAddress": ""}}) == ""
    assert address_from_inspect({}) == ""


def test_log_lines_without_a_tty_are_demultiplexed() -> None:
    def frame(stream: int, data: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    body = frame(1, b"out 1\nout ") + frame(2, b"err\n") + frame(1, "é\n".encode())
    assert log_lines(body, tty=False) == ["out 1", "out err", "é"]
    assert log_lines(b"", tty=False) == []
    assert log_lines(b"one\r\ntwo\n", tty=True) == ["one", "two"]


async def test_extra_hosts_naming_the_host_are_mapped_at_create() -> None:
    """`container_<hostname>` is resolved at start by the update operation (`hosts`)."""
    engine = DockerEngine("unix:///nowhere.sock")
    assert await engine._resolve_extra_host("app", "db:container_db-host") == ""
    assert await engine._resolve_extra_host("app", "gw:host_ip") == "gw:host-gateway"
    assert await engine._resolve_extra_host("app", "lo:host_ip_lo") == "lo:127.0.0.1"
    assert await engine._resolve_extra_host("app", "h:192.0.2.1") == "h:192.0.2.1"
