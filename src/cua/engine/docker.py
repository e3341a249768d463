"""`DockerEngine`: the `Engine` protocol on the Docker Engine HTTP API (through aiodocker).

This is the only module that knows Docker's types. It maps a `ContainerSpec` to Docker's
create body (Config + HostConfig) and inspect results back to a `ContainerSpec` (best
effort for containers created by others), maps Docker's errors to the typed engine errors,
and bounds every call with a timeout so that an engine that went away gives
`EngineUnavailableError` instead of a hang. See `docs/engine.md` for the key-by-key mapping.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import logging
import math
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from cua.containers.gosyntax import Size, SizeError
from cua.containers.spec import (
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
)
from cua.containers.state import ContainerDetails, ContainerState, ContainerStatus, ContainerSummary
from cua.engine.base import (
    ContainerEvent,
    ContainerNotFoundError,
    ContainerStateError,
    CreateFailedError,
    EngineError,
    EngineUnavailableError,
    EventAction,
    ImageNotFoundError,
    NameConflictError,
    PullFailedError,
    PullProgress,
    StartFailedError,
)
from cua.settings import RegistryCredentials

log = logging.getLogger(__name__)


def _segment(value: str) -> str:
    """A name or id as one Engine API path segment: `/` and `?` are encoded. The engine
    decodes `%2F` and removes dot segments before routing, so `..` is refused here."""
    if any(part in (".", "..") for part in value.split("/")):
        raise EngineError(f"invalid name {value!r}: a path segment is '.' or '..'")
    return quote(value, safe="")


DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# The newest Engine API version this adapter is written and tested against (dockerd 20.10).
MAX_API_VERSION = (1, 41)
DOCKER_HUB = "docker.io"
IMAGE_CACHE_SIZE = 256  # image inspects kept by ID (a device runs far fewer images)

_T = TypeVar("_T")

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


def engine_url(url: str | None = None) -> str:
    """The engine address: `url`, else `DOCKER_HOST`, else the default unix socket.

    A bare path means a unix socket; `tcp://` means plain HTTP (as the Docker CLI does).
    """
    chosen = url or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    if chosen.startswith("/"):
        return "unix://" + chosen
    if chosen.startswith("tcp://"):
        return "http://" + chosen.removeprefix("tcp://")
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


# --- extra hosts --------------------------------------------------------------------------


def interface_ipv4(ifname: str) -> str:
    """The IPv4 address of a host interface, read with an ioctl (no traffic is sent)."""
    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(
                sock.fileno(), siocgifaddr, struct.pack("256s", ifname[:15].encode())
            )
        except OSError as error:
            raise CreateFailedError(
                f"cannot resolve extra host value host_ip_{ifname}: "
                f"interface {ifname} has no IPv4 address ({error.strerror})"
            ) from error
    return socket.inet_ntoa(packed[20:24])


# --- spec -> create body -----------------------------------------------------------------


def _size(value: str, what: str) -> int:
    try:
        return Size.parse(value, allow_unlimited=True).engine_bytes
    except SizeError as error:
        raise CreateFailedError(f"invalid {what}: {error}") from error


def _memory_fields(resources: Resources | None) -> dict[str, int]:
    """Docker's memory fields. 0 means "unset/unchanged" to Docker."""
    if resources is None:
        return {}
    memory = _size(resources.memory, "memory") if resources.memory else 0
    fields = {
        "Memory": memory,
        "MemoryReservation": (
            _size(resources.memory_reservation, "memoryReservation")
            if resources.memory_reservation
            else 0
        ),
    }
    if resources.memory_swap:
        fields["MemorySwap"] = _size(resources.memory_swap, "memorySwap")
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
    if logc.max_size:
        options["max-size"] = str(_size(logc.max_size, "logMaxSize"))
    if logc.max_files > 0:
        options["max-file"] = str(logc.max_files)
    if logc.mode is LogMode.NON_BLOCKING:
        options["mode"] = "non-blocking"
        options["max-buffer-size"] = str(_size(logc.max_buffer_size or "1M", "logMaxBufferSize"))
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


def _sized(count: int) -> str:
    if count == -1:
        return "-1"
    return Size.from_bytes(count).text if count > 0 else ""


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
    buffer = ""
    if mode is LogMode.NON_BLOCKING:
        buffer = Size.from_engine(options.get("max-buffer-size", "1m")).text
    if driver_name == "none":
        return LogConfig(
            driver=LogDriver.NONE, max_files=0, max_size="", mode=mode, max_buffer_size=buffer
        )
    # Other drivers (journald, ...) have no Kanto equivalent; best effort as json-file.
    max_size = options.get("max-size", "")
    return LogConfig(
        driver=LogDriver.JSON_FILE,
        max_files=int(options.get("max-file", "1") or 1) if max_size else 1,
        max_size=Size.from_engine(max_size).text if max_size else "",
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


def address_from_inspect(data: Mapping[str, Any]) -> str:
    """The container's IPv4 address: the default bridge's, else its first network's."""
    settings = data.get("NetworkSettings") or {}
    if settings.get("IPAddress"):
        return str(settings["IPAddress"])
    for network in (settings.get("Networks") or {}).values():
        if network.get("IPAddress"):
            return str(network["IPAddress"])
    return ""


def state_from_inspect(state: Mapping[str, Any], restart_count: int) -> ContainerState:
    return ContainerState(
        status=status_from_docker(str(state.get("Status", ""))),
        exit_code=int(state.get("ExitCode") or 0),
        started_at=docker_time(state.get("StartedAt")),
        finished_at=docker_time(state.get("FinishedAt")),
        restart_count=restart_count,
        health=str((state.get("Health") or {}).get("Status") or ""),
    )


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


# --- the engine ----------------------------------------------------------------------------


class DockerEngine:
    """The Docker Engine behind the `Engine` protocol.

    `url`: the engine address (`unix://`, `tcp://`, `http://`; default `DOCKER_HOST`, else
    `unix:///var/run/docker.sock`). `mirrors`: registry host -> mirror host; images of that
    registry are pulled from the mirror and tagged with the original reference.
    `credentials`: registry host -> credentials, sent as `X-Registry-Auth` (never logged).
    `timeout`: the bound, in seconds, of every engine call (a stop adds its grace period).
    `pull_stall_timeout`: a pull fails when the engine reports nothing for this long.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        mirrors: Mapping[str, str] | None = None,
        credentials: Mapping[str, RegistryCredentials] | None = None,
        timeout: float = 60.0,
        pull_stall_timeout: float = 300.0,
    ) -> None:
        self.url = engine_url(url)
        self.mirrors = dict(mirrors or {})
        self._credentials = dict(credentials or {})
        self.timeout = timeout
        self.pull_stall_timeout = pull_stall_timeout
        self._docker: aiodocker.Docker | None = None
        self._version_lock = asyncio.Lock()
        self._negotiated = False
        self.api_version = ""
        # Image inspects by ID, for `inspect_container`: an image ID is the digest of its
        # config, so what we read from it (the config) never changes. Saves one engine call
        # per container inspect (identification and ACTIVATE inspect every container).
        self._image_configs: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"DockerEngine(url={self.url!r}, mirrors={self.mirrors!r})"

    # --- plumbing ----------------------------------------------------------------------------

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(
                url=self.url,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout),
                api_version="v1.41",  # replaced by the negotiated version before any call
            )
        return self._docker

    def _unavailable(self, error: BaseException) -> EngineUnavailableError:
        detail = str(error) or type(error).__name__
        if isinstance(error, TimeoutError):
            detail = f"no answer within {self.timeout:g} s"
        return EngineUnavailableError(f"cannot reach the container engine at {self.url}: {detail}")

    async def _negotiate(self) -> aiodocker.Docker:
        """Query /version once; use min(server API version, MAX_API_VERSION)."""
        docker = self._client()
        if self._negotiated:
            return docker
        async with self._version_lock:
            if self._negotiated:
                return docker
            version = await self._bounded(
                docker._query_json("version", versioned_api=False), self.timeout
            )
            server = tuple(int(p) for p in str(version["ApiVersion"]).split("."))
            chosen = min(server, MAX_API_VERSION)
            minimum = str(version.get("MinAPIVersion") or "1.12")
            if tuple(int(p) for p in minimum.split(".")) > chosen:
                raise EngineUnavailableError(
                    f"the container engine at {self.url} needs API >= {minimum}, "
                    f"this agent speaks up to {'.'.join(map(str, MAX_API_VERSION))}"
                )
            self.api_version = ".".join(map(str, chosen))
            docker.api_version = "v" + self.api_version
            self._negotiated = True
        return docker

    async def _bounded(self, call: Awaitable[_T], seconds: float) -> _T:
        try:
            async with asyncio.timeout(seconds):
                return await call
        except TimeoutError as error:
            raise self._unavailable(error) from None
        except DockerError as error:
            if error.status == 900:  # aiodocker: cannot connect
                raise self._unavailable(error) from None
            raise
        except (aiohttp.ClientError, OSError) as error:
            raise self._unavailable(error) from None

    async def _call(
        self,
        path: str,
        method: str = "GET",
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        limit: float | None = None,
    ) -> Any:
        """One bounded Engine API call returning its JSON (or "" for an empty answer)."""
        docker = await self._negotiate()
        return await self._bounded(
            docker._query_json(
                path,
                method,
                params=dict(params) if params else None,
                data=body,
                timeout=aiohttp.ClientTimeout(total=limit or self.timeout),
            ),
            (limit or self.timeout) + 1.0,
        )

    async def _inspect_raw(self, container: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = await self._call(f"containers/{_segment(container)}/json")
        except DockerError as error:
            if error.status == 404:
                raise ContainerNotFoundError(f"no such container: {container}") from None
            raise EngineError(f"cannot inspect container {container}: {error.message}") from None
        return data

    async def _name_for_message(self, container: str) -> str:
        """The container's name for an error message (callers often pass the id)."""
        try:
            data = await self._inspect_raw(container)
        except EngineError:
            return container
        return str(data.get("Name") or container).removeprefix("/")

    # --- the Engine protocol -------------------------------------------------------------

    async def list_containers(self) -> list[ContainerSummary]:
        try:
            items = await self._call("containers/json", params={"all": "1"})
        except DockerError as error:
            raise EngineError(f"cannot list containers: {error.message}") from None
        return [
            ContainerSummary(
                id=item["Id"],
                name=(item.get("Names") or ["/"])[0].removeprefix("/"),
                image=item.get("Image", ""),
                labels=dict(item.get("Labels") or {}),
                status=status_from_docker(item.get("State", "")),
            )
            for item in items
        ]

    async def inspect_container(self, container: str) -> ContainerDetails:
        data = await self._inspect_raw(container)
        image = await self._image_of_container(str(data.get("Image", "")))
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

    async def _image_of_container(self, image_id: str) -> dict[str, Any] | None:
        """The inspect of a container's image (by its ID), cached: see `_image_configs`."""
        cached = self._image_configs.get(image_id)
        if cached is not None:
            return cached
        data = await self._inspect_image(image_id)
        if data is not None and image_id.startswith("sha256:"):
            if len(self._image_configs) >= IMAGE_CACHE_SIZE:
                self._image_configs.pop(next(iter(self._image_configs)))  # the oldest
            self._image_configs[image_id] = data
        return data

    async def _inspect_image(self, image: str) -> dict[str, Any] | None:
        if not image:
            return None
        try:
            data: dict[str, Any] = await self._call(f"images/{_segment(image)}/json")
        except DockerError as error:
            if error.status == 404:
                return None
            raise EngineError(f"cannot inspect image {image}: {error.message}") from None
        return data

    def _local_name(self, image: str) -> str:
        """The name `image` has on the engine once pulled: its own, except when it is pinned
        by digest and pulled through a mirror (a digest cannot be tagged: see `_retag`)."""
        wanted = ImageReference.parse(image)
        mirror = self.mirrors.get(wanted.registry)
        return str(wanted.on_registry(mirror)) if mirror and wanted.digest else image

    async def image_present(self, image: str) -> bool:
        return await self._inspect_image(self._local_name(image)) is not None

    def pull_image(self, image: str) -> AsyncIterator[PullProgress]:
        return self._pull(image)

    async def _pull(self, image: str) -> AsyncIterator[PullProgress]:
        wanted = ImageReference.parse(image)
        mirror = self.mirrors.get(wanted.registry)
        source = wanted.on_registry(mirror) if mirror else wanted
        server = mirror or wanted.registry
        # Only the credentials of the host actually contacted: a mirror never receives the
        # login of the registry it stands in for.
        credentials = self._credentials.get(server)
        headers = (
            {"X-Registry-Auth": registry_auth_header(credentials, server)} if credentials else {}
        )
        params = {"fromImage": source.repository}
        if source.digest:
            params["fromImage"] = f"{source.repository}@{source.digest}"
        else:
            params["tag"] = source.tag or "latest"
        via = f" (through mirror {mirror})" if mirror else ""
        log.info("pulling image %s%s", image, via)
        docker = await self._negotiate()
        stall = aiohttp.ClientTimeout(
            total=None, connect=self.timeout, sock_read=self.pull_stall_timeout
        )
        stalled = PullFailedError(
            f"cannot pull image {image}{via}: no progress for {self.pull_stall_timeout:g} s"
        )
        try:
            # The engine answers only once the registry did: a silence here is the pull's.
            async with asyncio.timeout(self.pull_stall_timeout):
                response = await docker._do_query(
                    "images/create", "POST", params=params, headers=headers, timeout=stall
                )
        except aiohttp.ConnectionTimeoutError as error:
            raise self._unavailable(error) from None
        except TimeoutError:
            raise stalled from None
        except DockerError as error:
            if error.status == 900:  # aiodocker: cannot connect
                raise self._unavailable(error) from None
            raise PullFailedError(f"cannot pull image {image}{via}: {error.message}") from None
        except (aiohttp.ClientError, OSError) as error:
            raise self._unavailable(error) from None
        layers: dict[str, tuple[int, int]] = {}
        last: tuple[int, int] = (-1, -1)
        try:
            while True:
                try:
                    line = await response.content.readline()
                except TimeoutError:  # aiohttp's read timeout is one
                    raise stalled from None
                except (aiohttp.ClientError, OSError) as error:
                    detail = str(error) or type(error).__name__
                    raise PullFailedError(f"cannot pull image {image}{via}: {detail}") from None
                if not line:
                    break
                if not line.strip():
                    continue
                message = json.loads(line)
                if message.get("error"):
                    raise PullFailedError(f"cannot pull image {image}{via}: {message['error']}")
                _track_layer(layers, message)
                done = sum(d for d, _ in layers.values())
                total = sum(t for _, t in layers.values())
                if (done, total) != last:
                    last = (done, total)
                    yield PullProgress(image=image, done=done, total=total)
        finally:
            response.close()  # also when the caller stopped early: drop the stream
        if mirror:
            await self._retag(str(source), wanted, image)
        total = sum(t for _, t in layers.values())
        yield PullProgress(image=image, done=total, total=total, complete=True)

    async def _retag(self, pulled: str, wanted: ImageReference, image: str) -> None:
        """Tag the mirror's image with the desired reference, then drop the mirror's name."""
        if wanted.digest:
            log.warning("image %s is pinned by digest; it stays named %s", image, pulled)
            return
        try:
            await self._call(
                f"images/{_segment(pulled)}/tag",
                "POST",
                params={"repo": wanted.repository, "tag": wanted.tag or "latest"},
            )
            await self._call(f"images/{_segment(pulled)}", "DELETE", params={"noprune": "1"})
        except DockerError as error:
            raise PullFailedError(
                f"cannot pull image {image}: pulled as {pulled} but tagging failed: {error.message}"
            ) from None

    async def create_container(
        self, name: str, spec: ContainerSpec, labels: Mapping[str, str]
    ) -> str:
        extra_hosts = [await self._resolve_extra_host(name, entry) for entry in spec.extra_hosts]
        body = create_body(spec, labels, [h for h in extra_hosts if h])
        body["Image"] = self._local_name(spec.image)
        try:
            created = await self._call(
                "containers/create", "POST", params={"name": name}, body=body
            )
        except DockerError as error:
            if error.status == 409:
                raise NameConflictError(
                    f"cannot create container {name}: the name is already in use "
                    "by another container"
                ) from None
            if error.status == 404:
                raise ImageNotFoundError(
                    f"cannot create container {name}: image {spec.image} is not present"
                ) from None
            raise CreateFailedError(f"cannot create container {name}: {error.message}") from None
        for warning in created.get("Warnings") or []:
            log.debug("create %s: engine warning: %s", name, warning)
        return str(created["Id"])

    async def _resolve_extra_host(self, name: str, entry: str) -> str:
        """Kanto's host values that name the host, mapped at create. `container_<hostname>`
        entries are resolved by the update operation when the container starts
        (`cua.update.hosts`); one still here is left out."""
        host, sep, value = entry.partition(":")
        if not sep:
            return entry  # malformed: let the engine say so
        if value == "host_ip":
            return f"{host}:host-gateway"
        if value.startswith("host_ip_"):
            return f"{host}:{interface_ipv4(value.removeprefix('host_ip_'))}"
        if value.startswith("container_"):
            log.debug("container %s: extra host %s is resolved at start", name, host)
            return ""
        return entry  # an IP literal: as is

    async def start_container(self, container: str) -> None:
        try:
            await self._call(f"containers/{_segment(container)}/start", "POST")
        except DockerError as error:
            if error.status == 404:
                raise ContainerNotFoundError(f"no such container: {container}") from None
            name = await self._name_for_message(container)
            raise StartFailedError(f"cannot start container {name}: {error.message}") from None

    async def container_logs(self, container: str, lines: int) -> list[str]:
        docker = await self._negotiate()
        try:
            chunks = await self._bounded(
                docker.containers.container(container).log(
                    stdout=True, stderr=True, tail=str(lines), timeout=self.timeout
                ),
                self.timeout + 1.0,
            )
        except DockerError as error:
            if error.status == 404:
                raise ContainerNotFoundError(f"no such container: {container}") from None
            raise EngineError(f"cannot read the log of {container}: {error.message}") from None
        return "".join(chunks).splitlines()[-lines:] if lines > 0 else []

    async def stop_container(self, container: str, grace_period: float = 30.0) -> None:
        seconds = max(0, math.ceil(grace_period))
        try:
            await self._call(
                f"containers/{_segment(container)}/stop",
                "POST",
                params={"t": str(seconds)},
                limit=self.timeout + seconds,
            )
        except DockerError as error:
            if error.status == 404:
                raise ContainerNotFoundError(f"no such container: {container}") from None
            raise EngineError(f"cannot stop container {container}: {error.message}") from None

    async def remove_container(self, container: str) -> None:
        try:
            await self._call(
                f"containers/{_segment(container)}", "DELETE", params={"force": "1", "v": "1"}
            )
        except DockerError as error:
            if error.status == 404:
                return
            if error.status == 409 and "already in progress" in error.message:
                return
            raise EngineError(f"cannot remove container {container}: {error.message}") from None

    async def rename_container(self, container: str, new_name: str) -> None:
        try:
            await self._call(
                f"containers/{_segment(container)}/rename", "POST", params={"name": new_name}
            )
        except DockerError as error:
            if error.status == 404:
                raise ContainerNotFoundError(f"no such container: {container}") from None
            if error.status == 409:
                raise NameConflictError(
                    f"cannot rename container {container} to {new_name}: "
                    "the name is already in use by another container"
                ) from None
            if "same name" in error.message:
                return
            raise CreateFailedError(
                f"cannot rename container {container} to {new_name}: {error.message}"
            ) from None

    async def update_container(
        self, container: str, restart: RestartPolicy, resources: Resources | None
    ) -> None:
        body: dict[str, Any] = {"RestartPolicy": _restart_body(restart)}
        try:
            body.update(_memory_fields(resources))
        except CreateFailedError as error:
            raise EngineError(f"cannot update container {container}: {error}") from None
        try:
            await self._call(f"containers/{_segment(container)}/update", "POST", body=body)
        except DockerError as error:
            if error.status == 404:
                raise ContainerNotFoundError(f"no such container: {container}") from None
            raise EngineError(f"cannot update container {container}: {error.message}") from None

    async def pause_container(self, container: str) -> None:
        await self._state_change(container, "pause")

    async def unpause_container(self, container: str) -> None:
        await self._state_change(container, "unpause")

    async def _state_change(self, container: str, action: str) -> None:
        try:
            await self._call(f"containers/{_segment(container)}/{action}", "POST")
        except DockerError as error:
            if error.status == 404:
                raise ContainerNotFoundError(f"no such container: {container}") from None
            # Docker answers 409, or 500 for "is not paused" (20.10).
            if error.status == 409 or "is not paused" in error.message:
                raise ContainerStateError(
                    f"cannot {action} container {container}: {error.message}"
                ) from None
            raise EngineError(f"cannot {action} container {container}: {error.message}") from None

    def events(self) -> AsyncIterator[ContainerEvent]:
        return _DockerEventStream(self, time.time_ns())

    async def close(self) -> None:
        if self._docker is not None:
            docker, self._docker = self._docker, None
            self._negotiated = False
            await docker.close()


def _track_layer(layers: dict[str, tuple[int, int]], message: Mapping[str, Any]) -> None:
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


class _DockerEventStream:
    """GET /events from the moment `events()` was called (`since`), container events only.

    Opening lazily with `since` means no event between the call and the first iteration is
    lost. Only opening the stream is bounded by the timeout; waiting for events is not.
    """

    def __init__(self, engine: DockerEngine, since_ns: int) -> None:
        self._engine = engine
        self._since_ns = since_ns
        self._response: aiohttp.ClientResponse | None = None
        self._closed = False

    def __aiter__(self) -> _DockerEventStream:
        return self

    async def _open(self) -> aiohttp.ClientResponse:
        engine = self._engine
        docker = await engine._negotiate()
        seconds, nanos = divmod(self._since_ns, 1_000_000_000)
        params = {
            "since": f"{seconds}.{nanos:09d}",
            "filters": json.dumps({"type": ["container"]}),
        }
        endless = aiohttp.ClientTimeout(total=None, connect=engine.timeout, sock_read=None)
        return await engine._bounded(
            docker._do_query("events", "GET", params=params, timeout=endless), engine.timeout
        )

    async def __anext__(self) -> ContainerEvent:
        if self._closed:
            raise StopAsyncIteration
        if self._response is None:
            self._response = await self._open()
        while True:
            try:
                line = await self._response.content.readline()
            except (aiohttp.ClientError, OSError) as error:
                await self.aclose()
                raise self._engine._unavailable(error) from None
            if not line:
                await self.aclose()
                raise StopAsyncIteration
            if not line.strip():
                continue
            raw = json.loads(line)
            if raw.get("Type") not in (None, "container"):
                continue
            if int(raw.get("timeNano") or 0) < self._since_ns:
                continue
            return event_from_docker(raw)

    async def aclose(self) -> None:
        self._closed = True
        if self._response is not None:
            self._response.close()
            self._response = None
