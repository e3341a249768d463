"""The Docker Engine API's bodies and answers, mapped to and from our types: pure, no I/O.

`DockerEngine` (`cua.engine.docker`) does the I/O; everything it sends or reads passes
through here: a `ContainerSpec` to Docker's create body (Config + HostConfig), inspect and
list answers back to `ContainerSpec`/`ContainerSummary`/`ContainerDetails` (best effort for
containers created by others), the pull's parameters, credentials header and progress
stream, and events. See `docs/engine.md` for the key-by-key mapping.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cua.containers.gosyntax import UNLIMITED, Size
from cua.containers.spec import (
    DEFAULT_LOG_MAX_BUFFER_SIZE,
    ContainerSpec,
    DeviceMapping,
    LogConfig,
    LogDriver,
    LogMode,
    MountPoint,
    NetworkMode,
    PortMapping,
    ProcessConfig,
    Propagation,
    Resources,
    RestartPolicy,
    RestartPolicyType,
    engine_bytes,
)
from cua.containers.state import ContainerDetails, ContainerState, ContainerStatus, ContainerSummary
from cua.engine.base import ContainerEvent, EventAction
from cua.settings import RegistryCredentials

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# The newest Engine API version this adapter is written and tested against (dockerd 20.10).
MAX_API_VERSION = (1, 41)
DOCKER_HUB = "docker.io"

_STATUS = {
    "created": ContainerStatus.CREATED,
    "running": ContainerStatus.RUNNING,
    # Between two runs under a restart policy: Kanto has no such state; the container is
    # meant to run, and "ensure running" must not try to start it a second time.
    "restarting": ContainerStatus.RUNNING,
    "paused": ContainerStatus.PAUSED,
    "exited": ContainerStatus.EXITED,
    "removing": ContainerStatus.DEAD,
    "dead": ContainerStatus.DEAD,
}


def engine_url(url: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The engine address: `url`, else `DOCKER_HOST`, else the default unix socket.

    As the docker CLI takes it: a bare path means a unix socket; `tcp://` means plain HTTP,
    or HTTPS when `DOCKER_TLS_VERIFY` is set (certificates from `DOCKER_CERT_PATH`).
    """
    env = os.environ if environ is None else environ
    chosen = url or env.get("DOCKER_HOST") or DEFAULT_SOCKET
    if chosen.startswith("/"):
        return "unix://" + chosen
    if chosen.startswith("tcp://"):
        scheme = "https://" if env.get("DOCKER_TLS_VERIFY") else "http://"
        return scheme + chosen.removeprefix("tcp://")
    return chosen


def status_from_docker(state: str) -> ContainerStatus:
    return _STATUS.get(state, ContainerStatus.UNKNOWN)


def docker_time(value: str | None) -> str:
    """Docker's timestamps are RFC3339Nano already; its zero time means "never"."""
    if not value or value.startswith("0001-01-01"):
        return ""
    return value


# --- image references, mirrors and credentials -----------------------------------------


@dataclass(frozen=True, slots=True)
class ImageReference:
    """An image reference split the way the Engine API's pull wants it."""

    registry: str  # host[:port]; "docker.io" when the reference names none
    path: str  # repository path inside the registry
    tag: str = ""
    digest: str = ""
    explicit_registry: bool = True

    @classmethod
    def parse(cls, reference: str) -> ImageReference:
        rest, digest = reference, ""
        if "@" in rest:
            rest, digest = rest.split("@", 1)
        tag = ""
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
        first, _, remainder = rest.partition("/")
        if remainder and ("." in first or ":" in first or first == "localhost"):
            return cls(first, remainder, tag, digest)
        return cls(DOCKER_HUB, rest, tag, digest, explicit_registry=False)

    @property
    def repository(self) -> str:
        """The repository as written (the registry only if the reference had one)."""
        return f"{self.registry}/{self.path}" if self.explicit_registry else self.path

    def on_registry(self, registry: str) -> ImageReference:
        path = self.path
        if self.registry == DOCKER_HUB and "/" not in path:
            path = "library/" + path  # Docker Hub's official images live under library/
        return ImageReference(registry, path, self.tag, self.digest)

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def registry_auth_header(credentials: RegistryCredentials, server: str) -> str:
    """The `X-Registry-Auth` value: base64url of the JSON auth config (Engine API)."""
    config = {
        "username": credentials.username,
        "password": credentials.password,
        "serveraddress": server,
    }
    return base64.urlsafe_b64encode(json.dumps(config).encode()).decode()


# --- spec -> create body -----------------------------------------------------------------


def _memory_fields(resources: Resources | None) -> dict[str, int]:
    """Docker's memory fields. 0 means "unset/unchanged" to Docker."""
    if resources is None:
        return {}
    memory = engine_bytes(resources.memory)
    fields = {
        "Memory": memory,
        "MemoryReservation": engine_bytes(resources.memory_reservation),
    }
    if resources.memory_swap is not None:
        fields["MemorySwap"] = resources.memory_swap.engine_bytes
    elif memory > 0:
        # Docker's own default at create (and CM's): swap = 2 x memory. Sent explicitly so
        # that a runtime update that raises memory above the old swap is accepted.
        fields["MemorySwap"] = 2 * memory
    return fields


def _restart_body(restart: RestartPolicy) -> dict[str, Any]:
    retries = restart.max_retries if restart.type is RestartPolicyType.ON_FAILURE else 0
    return {"Name": str(restart.type), "MaximumRetryCount": retries}


def _log_body(logc: LogConfig) -> dict[str, Any]:
    if logc.driver is LogDriver.NONE:
        # Docker rejects log options for the `none` driver; nothing is logged anyway.
        return {"Type": "none", "Config": {}}
    options: dict[str, str] = {}
    if logc.max_size is not None:
        options["max-size"] = str(logc.max_size.engine_bytes)
    if logc.max_files > 0:
        options["max-file"] = str(logc.max_files)
    if logc.mode is LogMode.NON_BLOCKING:
        options["mode"] = "non-blocking"
        buffer = logc.max_buffer_size or DEFAULT_LOG_MAX_BUFFER_SIZE
        options["max-buffer-size"] = str(buffer.engine_bytes)
    return {"Type": str(logc.driver), "Config": options}


def create_body(
    spec: ContainerSpec, labels: Mapping[str, str], extra_hosts: list[str]
) -> dict[str, Any]:
    """The Engine API create body for `spec` (extra hosts already resolved)."""
    config: dict[str, Any] = {
        "Image": spec.image,
        "Hostname": spec.host_name or f"{spec.name}-host",
        "Domainname": spec.domain_name or f"{spec.name}-domain",
        "Tty": spec.terminal,
        "OpenStdin": spec.interactive,
        "Labels": dict(labels),
    }
    if spec.env:
        config["Env"] = list(spec.env)
    if spec.cmd:
        config["Cmd"] = list(spec.cmd)  # Kanto's cmd is Docker's Cmd; Entrypoint is kept
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in spec.ports:
        end = port.host_port_end or port.host_port
        host_port = str(port.host_port) if end == port.host_port else f"{port.host_port}-{end}"
        key = f"{port.container_port}/{port.protocol or 'tcp'}"
        bindings.setdefault(key, []).append({"HostIp": port.host_ip, "HostPort": host_port})
    if bindings:
        config["ExposedPorts"] = {key: {} for key in bindings}
    host: dict[str, Any] = {
        "NetworkMode": str(spec.network),
        "Privileged": spec.privileged,
        "PortBindings": bindings,
        "Devices": [
            {
                "PathOnHost": device.host_path,
                "PathInContainer": device.container_path or device.host_path,
                "CgroupPermissions": device.permissions or "rwm",
            }
            for device in spec.devices
        ],
        "Mounts": [
            {
                "Type": "bind",
                "Source": mount.source,
                "Target": mount.destination,
                "BindOptions": {"Propagation": str(mount.propagation)},
            }
            for mount in spec.mounts
        ],
        "ExtraHosts": extra_hosts,
        "RestartPolicy": _restart_body(spec.restart),
        "LogConfig": _log_body(spec.log),
        **_memory_fields(spec.resources),
    }
    config["HostConfig"] = host
    return config


# --- inspect -> spec ---------------------------------------------------------------------


def _sized(count: int) -> Size | None:
    if count == -1:
        return UNLIMITED
    return Size.from_bytes(count) if count > 0 else None


def _parse_ports(bindings: Mapping[str, Any] | None) -> tuple[PortMapping, ...]:
    ports: list[PortMapping] = []
    for key, entries in (bindings or {}).items():
        container_port, _, protocol = key.partition("/")
        for entry in entries or []:
            host_port = str(entry.get("HostPort") or "0")
            start, _, end = host_port.partition("-")
            ports.append(
                PortMapping(
                    host_port=int(start or 0),
                    container_port=int(container_port),
                    host_port_end=int(end or start or 0),
                    host_ip=entry.get("HostIp") or "0.0.0.0",
                    protocol=protocol or "tcp",
                )
            )
    return tuple(ports)


def _parse_mounts(host: Mapping[str, Any]) -> tuple[MountPoint, ...]:
    mounts: list[MountPoint] = []
    for mount in host.get("Mounts") or []:
        if mount.get("Type") != "bind":
            continue
        propagation = (mount.get("BindOptions") or {}).get("Propagation") or "rprivate"
        mounts.append(MountPoint(mount["Source"], mount["Target"], Propagation(propagation)))
    for bind in host.get("Binds") or []:  # containers created by others with -v
        parts = bind.split(":")
        if len(parts) < 2 or not parts[0].startswith("/"):
            continue  # a named volume: no Kanto equivalent
        options = parts[2].split(",") if len(parts) > 2 else []
        modes = [o for o in options if o in {p.value for p in Propagation}]
        mounts.append(
            MountPoint(parts[0], parts[1], Propagation(modes[0] if modes else "rprivate"))
        )
    return tuple(mounts)


def _parse_log(host: Mapping[str, Any]) -> LogConfig:
    log_config = host.get("LogConfig") or {}
    options: Mapping[str, str] = log_config.get("Config") or {}
    driver_name = log_config.get("Type") or "json-file"
    mode = LogMode.NON_BLOCKING if options.get("mode") == "non-blocking" else LogMode.BLOCKING
    buffer = None
    if mode is LogMode.NON_BLOCKING:
        buffer = Size.from_engine(options.get("max-buffer-size", "1m"))
    if driver_name == "none":
        return LogConfig(
            driver=LogDriver.NONE, max_files=0, max_size=None, mode=mode, max_buffer_size=buffer
        )
    # Other drivers (journald, ...) have no Kanto equivalent; best effort as json-file.
    max_size = options.get("max-size", "")
    return LogConfig(
        driver=LogDriver.JSON_FILE,
        max_files=int(options.get("max-file", "1") or 1) if max_size else 1,
        max_size=Size.from_engine(max_size) if max_size else None,
        mode=mode,
        max_buffer_size=buffer,
    )


def spec_from_inspect(data: Mapping[str, Any], image: Mapping[str, Any] | None) -> ContainerSpec:
    """A `ContainerSpec` from Docker's inspect (best effort; see docs/engine.md).

    `image` is the image's inspect, so that env and cmd inherited from the image are not
    taken for the container's own (Docker merges them at create).
    """
    config: Mapping[str, Any] = data.get("Config") or {}
    host: Mapping[str, Any] = data.get("HostConfig") or {}
    image_config: Mapping[str, Any] = (image or {}).get("Config") or {}
    image_env = set(image_config.get("Env") or [])
    env = tuple(e for e in config.get("Env") or [] if e not in image_env)
    cmd = tuple(config.get("Cmd") or [])
    if image is not None and list(cmd) == list(image_config.get("Cmd") or []):
        cmd = ()
    restart = host.get("RestartPolicy") or {}
    restart_name = restart.get("Name") or "no"
    restart_type = RestartPolicyType(restart_name)
    resources = Resources(
        memory=_sized(int(host.get("Memory") or 0)),
        memory_reservation=_sized(int(host.get("MemoryReservation") or 0)),
        memory_swap=_sized(int(host.get("MemorySwap") or 0)),
    )
    name = str(data.get("Name", "")).removeprefix("/")
    network = host.get("NetworkMode") or "bridge"
    return ContainerSpec(
        name=name,
        image=config.get("Image", ""),
        host_name=config.get("Hostname", ""),
        domain_name=config.get("Domainname", ""),
        config=ProcessConfig(env=env, cmd=cmd) if env or cmd else None,
        devices=tuple(
            DeviceMapping(
                d["PathOnHost"], d["PathInContainer"], d.get("CgroupPermissions") or "rwm"
            )
            for d in host.get("Devices") or []
        ),
        ports=_parse_ports(host.get("PortBindings")),
        mounts=_parse_mounts(host),
        extra_hosts=tuple(
            h.removesuffix(":host-gateway") + ":host_ip" if h.endswith(":host-gateway") else h
            for h in host.get("ExtraHosts") or []
        ),
        network=NetworkMode.HOST if network == "host" else NetworkMode.BRIDGE,
        privileged=bool(host.get("Privileged")),
        terminal=bool(config.get("Tty")),
        interactive=bool(config.get("OpenStdin")),
        restart=RestartPolicy(
            type=restart_type,
            max_retries=int(restart.get("MaximumRetryCount") or 0)
            if restart_type is RestartPolicyType.ON_FAILURE
            else 0,
        ),
        log=_parse_log(host),
        resources=resources if resources != Resources() else None,
    )


def state_from_inspect(state: Mapping[str, Any], restart_count: int) -> ContainerState:
    return ContainerState(
        status=status_from_docker(str(state.get("Status", ""))),
        exit_code=int(state.get("ExitCode") or 0),
        started_at=docker_time(state.get("StartedAt")),
        finished_at=docker_time(state.get("FinishedAt")),
        restart_count=restart_count,
        health=str((state.get("Health") or {}).get("Status") or ""),
    )


def address_from_inspect(data: Mapping[str, Any]) -> str:
    """The container's IPv4 address: the default bridge's, else its first network's."""
    settings = data.get("NetworkSettings") or {}
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    for network in (settings.get("Networks") or {}).values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    return ""


def summary_from_list(item: Mapping[str, Any]) -> ContainerSummary:
    """One entry of `GET /containers/json`."""
    return ContainerSummary(
        id=item["Id"],
        name=(item.get("Names") or ["/"])[0].removeprefix("/"),
        image=item.get("Image", ""),
        labels=dict(item.get("Labels") or {}),
        status=status_from_docker(item.get("State", "")),
    )


def details_from_inspect(
    data: Mapping[str, Any], image: Mapping[str, Any] | None
) -> ContainerDetails:
    """`GET /containers/{id}/json`, with its image's inspect (see `spec_from_inspect`)."""
    config = data.get("Config") or {}
    return ContainerDetails(
        id=data["Id"],
        name=str(data.get("Name", "")).removeprefix("/"),
        image=config.get("Image", ""),
        labels=dict(config.get("Labels") or {}),
        state=state_from_inspect(data.get("State") or {}, int(data.get("RestartCount") or 0)),
        created=docker_time(data.get("Created")),
        spec=spec_from_inspect(data, image),
        image_labels=dict(((image or {}).get("Config") or {}).get("Labels") or {}),
        address=address_from_inspect(data),
    )


def log_lines(body: bytes, tty: bool) -> list[str]:
    """The lines of `GET /containers/{id}/logs`. Without a TTY the engine multiplexes
    stdout and stderr in frames: 1 byte stream, 3 bytes zero, 4 bytes big-endian length,
    then the payload; with a TTY the body is the raw output."""
    if tty:
        return body.decode(errors="replace").splitlines()
    payload: list[bytes] = []
    at = 0
    while at + 8 <= len(body):
        size = int.from_bytes(body[at + 4 : at + 8], "big")
        payload.append(body[at + 8 : at + 8 + size])
        at += 8 + size
    return b"".join(payload).decode(errors="replace").splitlines()


def update_body(restart: RestartPolicy, resources: Resources | None) -> dict[str, Any]:
    """The `POST /containers/{id}/update` body."""
    return {"RestartPolicy": _restart_body(restart), **_memory_fields(resources)}


def pull_params(source: ImageReference) -> dict[str, str]:
    """The `POST /images/create` query for `source` (a digest, else a tag, else latest)."""
    if source.digest:
        return {"fromImage": f"{source.repository}@{source.digest}"}
    return {"fromImage": source.repository, "tag": source.tag or "latest"}


def event_from_docker(raw: Mapping[str, Any]) -> ContainerEvent:
    actor = raw.get("Actor") or {}
    attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    raw_action = str(raw.get("Action") or raw.get("status") or "")
    try:
        action = EventAction(raw_action)
    except ValueError:
        action = EventAction.OTHER
    return ContainerEvent(
        action=action,
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        name=attributes.get("name", ""),
        raw_action=raw_action,
        attributes=attributes,
    )


def track_layer(layers: dict[str, tuple[int, int]], message: Mapping[str, Any]) -> None:
    """Fold one pull-stream message into per-layer (done, total) bytes."""
    layer = message.get("id")
    status = str(message.get("status") or "")
    if not layer or status.startswith(("Pulling from", "Digest", "Status")):
        return
    done, total = layers.get(layer, (0, 0))
    detail = message.get("progressDetail") or {}
    if status == "Downloading" and detail.get("total"):
        total = int(detail["total"])
        done = int(detail.get("current") or 0)
    elif status in ("Download complete", "Pull complete", "Verifying Checksum"):
        done = total
    elif status == "Already exists":
        return
    layers[layer] = (min(done, total) if total else done, total)
