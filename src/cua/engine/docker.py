"""`DockerEngine`: the `Engine` protocol on the Docker Engine HTTP API (its I/O).

The bodies and answers are mapped in `cua.engine.docker_mapping` (pure); the HTTP is
`cua.engine.transport` (h11 over asyncio streams). This module makes the calls, bounds
each with a timeout so that an engine that went away gives `EngineUnavailableError`
instead of a hang, and turns transport and API errors into the typed engine errors in one
place (`_engine_errors`), each call saying what its failures mean (`_Failure`).
These three modules and `cua.engine.docker_archive` (the archive `docker load`
reads) are the only ones that know Docker's types. See `docs/engine.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cua.containers.spec import ContainerSpec, Resources, RestartPolicy
from cua.containers.state import ContainerDetails, ContainerSummary
from cua.engine.base import (
    ContainerEvent,
    ContainerNotFoundError,
    ContainerStateError,
    CreateFailedError,
    EngineError,
    EngineUnavailableError,
    ImageNotFoundError,
    NameConflictError,
    PullFailedError,
    PullProgress,
    StartFailedError,
)
from cua.engine.docker_mapping import (
    MAX_API_VERSION,
    ImageReference,
    create_body,
    details_from_inspect,
    engine_url,
    event_from_docker,
    log_lines,
    pull_params,
    registry_auth_header,
    summary_from_list,
    track_layer,
    update_body,
)
from cua.engine.transport import (
    APIError,
    EngineHTTP,
    StreamedResponse,
    TransportError,
    engine_address,
)
from cua.settings import RegistryCredentials

if TYPE_CHECKING:  # imported when used: an agent whose engine pulls never loads them
    from cua.download.engine_registries import EngineRegistries
    from cua.download.fetch import AgentDownloader
    from cua.download.manifests import Platform
    from cua.engine.docker_archive import Member

log = logging.getLogger(__name__)


def _segment(value: str) -> str:
    """A name or id as one Engine API path segment: `/` and `?` are encoded. The engine
    decodes `%2F` and removes dot segments before routing, so `..` is refused here."""
    if any(part in (".", "..") for part in value.split("/")):
        raise EngineError(f"invalid name {value!r}: a path segment is '.' or '..'")
    return quote(value, safe="")


IMAGE_CACHE_SIZE = 256  # image inspects kept by ID (a device runs far fewer images)
INSPECTS_AT_ONCE = 4  # image inspects of `layer_chains` sent together
INFO_FRESH_FOR = 60.0  # s a read of `GET /info` serves (`_info`)

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


# --- errors: the one place where transport and API errors become engine errors -----------

# An API error's status or text -> the engine error type (the message is "<what>: <the
# engine's message>"), a ready error, or None: not a failure (removing what is gone).
_Outcome = type[EngineError] | EngineError | None


@dataclass(frozen=True, slots=True)
class _Failure:
    """What the failure of one engine call means: `what` failed (the message's start),
    as `kind` unless its status or a text in the engine's message says otherwise.
    `broken_stream`: a connection lost in the middle of a streamed answer is this call's
    failure (`kind`), not the engine's absence (a pull's stream dies with the registry)."""

    what: str
    kind: type[EngineError] = EngineError
    by_status: Mapping[int, _Outcome] = field(default_factory=dict)
    by_text: Mapping[str, _Outcome] = field(default_factory=dict)
    broken_stream: bool = False

    def error(self, api: APIError) -> EngineError | None:
        outcome: _Outcome = self.kind
        if api.status in self.by_status:
            outcome = self.by_status[api.status]
        else:
            for text, meaning in self.by_text.items():
                if text in api.message:
                    outcome = meaning
                    break
        if isinstance(outcome, type):
            return outcome(f"{self.what}: {api.message}")
        return outcome


def _not_found(container: str) -> ContainerNotFoundError:
    return ContainerNotFoundError(f"no such container: {container}")


# --- the engine ----------------------------------------------------------------------------


class DockerEngine:
    """The Docker Engine behind the `Engine` protocol.

    `url`: the engine address (`unix://`, `tcp://`, `http://`, `https://`; default
    `DOCKER_HOST`, else `unix:///var/run/docker.sock`; `tcp://` is TLS when
    `DOCKER_TLS_VERIFY` is set, as for the docker CLI). `mirrors`: registry host -> mirror
    host; images of that registry are pulled from the mirror and tagged with the original
    reference. `credentials`: registry host -> credentials, sent as `X-Registry-Auth`
    (never logged; a warning when the engine is reached over plain TCP).
    `timeout`: the bound, in seconds, of every engine call (a stop adds its grace period).
    `pull_stall_timeout`: a pull fails when the engine reports nothing for this long.
    `downloader`: the agent fetches images itself and the engine pulls them from the
    agent's loopback registry or loads them (README, Downloads); None: the engine pulls
    from the registry. Images pinned by digest are always engine pulls
    (a loaded image has no repo digest to find it by).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        mirrors: Mapping[str, str] | None = None,
        credentials: Mapping[str, RegistryCredentials] | None = None,
        timeout: float = 60.0,
        pull_stall_timeout: float = 300.0,
        downloader: AgentDownloader | None = None,
    ) -> None:
        self.url = engine_url(url)
        self.downloader = downloader
        self.mirrors = dict(mirrors or {})
        self._credentials = dict(credentials or {})
        self.timeout = timeout
        self.pull_stall_timeout = pull_stall_timeout
        self._http: EngineHTTP | None = None
        self._version_lock = asyncio.Lock()
        self.api_version = ""
        # The engine's (Os, Arch), read by the API version negotiation's /version.
        self._os_arch = ("linux", "")
        self._info_read: Mapping[str, Any] | None = None
        self._info_at = 0.0  # when it was read (the event loop's clock)
        self._info_lock = asyncio.Lock()
        self._plain_tcp_warned = False
        # Image inspects by ID, for `inspect_container` and `layer_chains`: an image ID is the
        # digest of its config, so what we read from it (the config, the layers) never
        # changes. Saves one engine call per container inspect (identification and ACTIVATE
        # inspect every container) and per image at each agent download's start.
        self._image_configs: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"DockerEngine(url={self.url!r}, mirrors={self.mirrors!r})"

    # --- plumbing ----------------------------------------------------------------------------

    def _client(self) -> EngineHTTP:
        if self._http is None:
            try:
                address = engine_address(self.url)
            except (ValueError, OSError) as error:  # ssl.SSLError is an OSError
                raise EngineUnavailableError(
                    f"cannot reach the container engine at {self.url}: {error}"
                ) from None
            self._http = EngineHTTP(address, connect_timeout=self.timeout)
        return self._http

    def _unavailable(self, detail: str) -> EngineUnavailableError:
        return EngineUnavailableError(f"cannot reach the container engine at {self.url}: {detail}")

    @contextlib.contextmanager
    def _engine_errors(self, failure: _Failure | None) -> Iterator[None]:
        """Transport and API errors inside as engine errors: the only translation there is.

        An API error the failure says is none is swallowed (the block ends early)."""
        try:
            yield
        except APIError as error:
            if failure is None:
                raise EngineError(
                    f"the container engine at {self.url} answered {error.status}: {error.message}"
                ) from None
            engine_error = failure.error(error)
            if engine_error is not None:
                raise engine_error from None
        except TimeoutError:
            raise self._unavailable(f"no answer within {self.timeout:g} s") from None
        except TransportError as error:
            if failure is not None and failure.broken_stream:
                raise failure.kind(f"{failure.what}: {error}") from None
            raise self._unavailable(str(error)) from None

    async def _negotiate(self) -> EngineHTTP:
        """Query /version once; use min(server API version, MAX_API_VERSION)."""
        http = self._client()
        if self.api_version:
            return http
        async with self._version_lock:
            if self.api_version:
                return http
            with self._engine_errors(None):
                async with asyncio.timeout(self.timeout):
                    version = (await http.request("GET", "/version")).json()
            self._os_arch = _os_arch(version)
            server = tuple(int(p) for p in str(version["ApiVersion"]).split("."))
            chosen = min(server, MAX_API_VERSION)
            minimum = str(version.get("MinAPIVersion") or "1.12")
            if tuple(int(p) for p in minimum.split(".")) > chosen:
                raise EngineUnavailableError(
                    f"the container engine at {self.url} needs API >= {minimum}, "
                    f"this agent speaks up to {'.'.join(map(str, MAX_API_VERSION))}"
                )
            self.api_version = ".".join(map(str, chosen))
        return http

    def _path(self, path: str) -> str:
        return f"/v{self.api_version}/{path}"

    async def _call(
        self,
        method: str,
        path: str,
        failure: _Failure,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        limit: float | None = None,
    ) -> Any:
        """One bounded Engine API call returning its JSON ("" for an empty answer; None
        when the failure says the error it got is none)."""
        http = await self._negotiate()
        data = b"" if body is None else json.dumps(body).encode()
        with self._engine_errors(failure):
            async with asyncio.timeout(limit or self.timeout):
                response = await http.request(method, self._path(path), params=params, body=data)
            return response.json()
        return None

    async def _inspect_raw(self, container: str) -> dict[str, Any]:
        failure = _Failure(
            f"cannot inspect container {container}", by_status={404: _not_found(container)}
        )
        data: dict[str, Any] = await self._call(
            "GET", f"containers/{_segment(container)}/json", failure
        )
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
        items = await self._call(
            "GET", "containers/json", _Failure("cannot list containers"), params={"all": "1"}
        )
        return [summary_from_list(item) for item in items]

    async def inspect_container(self, container: str) -> ContainerDetails:
        data = await self._inspect_raw(container)
        image = await self._image_by_id(str(data.get("Image", "")))
        return details_from_inspect(data, image)

    async def _image_by_id(self, image_id: str) -> dict[str, Any] | None:
        """The inspect of an image by its ID, cached: see `_image_configs`."""
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
        failure = _Failure(f"cannot inspect image {image}", by_status={404: None})
        data: dict[str, Any] | None = await self._call(
            "GET", f"images/{_segment(image)}/json", failure
        )
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

    def _auth_headers(self, server: str) -> dict[str, str]:
        """`X-Registry-Auth` for `server` if we hold its credentials."""
        credentials = self._credentials.get(server)
        if credentials is None:
            return {}
        if self._client().address.plain_tcp and not self._plain_tcp_warned:
            self._plain_tcp_warned = True
            log.warning(
                "registry credentials for %s are sent to the container engine at %s over "
                "plain HTTP: anyone on the way can read them (use a unix socket, or TLS: "
                "DOCKER_TLS_VERIFY and DOCKER_CERT_PATH)",
                server,
                self.url,
            )
        return {"X-Registry-Auth": registry_auth_header(credentials, server)}

    async def _pull(self, image: str) -> AsyncIterator[PullProgress]:
        wanted = ImageReference.parse(image)
        mirror = self.mirrors.get(wanted.registry)
        source = wanted.on_registry(mirror) if mirror else wanted
        if self.downloader is not None and not wanted.digest:
            fetched = wanted.on_registry(mirror or wanted.registry)
            tag = wanted.tag or "latest"
            named = image if wanted.tag else f"{image}:{tag}"
            from cua.download.fetch import Source

            where = Source(fetched.registry, fetched.path, tag, named)
            async for progress in self.downloader.pull(self, where):
                yield progress
            return
        # Only the credentials of the host actually contacted: a mirror never receives the
        # login of the registry it stands in for.
        headers = self._auth_headers(mirror or wanted.registry)
        via = f" (through mirror {mirror})" if mirror else ""
        log.info("pulling image %s%s", image, via)
        http = await self._negotiate()
        failure = _Failure(f"cannot pull image {image}{via}", PullFailedError)
        stalled = PullFailedError(
            f"cannot pull image {image}{via}: no progress for {self.pull_stall_timeout:g} s"
        )
        reading = _Failure(failure.what, PullFailedError, broken_stream=True)
        layers: dict[str, tuple[int, int]] = {}
        last: tuple[int, int] = (-1, -1)
        async with contextlib.AsyncExitStack() as stack:
            # The engine answers only once the registry did: a silence before the answer is
            # the pull's, as one in the middle is (connecting is bounded by `timeout`).
            with self._engine_errors(failure):
                try:
                    async with asyncio.timeout(self.pull_stall_timeout):
                        response = await stack.enter_async_context(
                            http.stream(
                                "POST",
                                self._path("images/create"),
                                params=pull_params(source),
                                headers=headers,
                            )
                        )
                except TimeoutError:
                    raise stalled from None
            with self._engine_errors(reading):
                while line := await _readline(response, self.pull_stall_timeout, stalled):
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if message.get("error"):
                        raise PullFailedError(f"{failure.what}: {message['error']}")
                    track_layer(layers, message)
                    done = sum(d for d, _ in layers.values())
                    total = sum(t for _, t in layers.values())
                    if (done, total) != last:
                        last = (done, total)
                        yield PullProgress(image=image, done=done, total=total)
        if mirror:
            await self._retag(str(source), wanted, image)
        total = sum(t for _, t in layers.values())
        yield PullProgress(image=image, done=total, total=total, complete=True)

    async def _retag(
        self, pulled: str, wanted: ImageReference, image: str, recorded: str = ""
    ) -> None:
        """Tag the pulled image with the desired reference, then drop the name it was pulled
        as and, if given, the repo digest the pull `recorded` (`name@sha256:...`).

        The engine drops a repository's digests with its last tag (and lists them as
        untagged): the digest is dropped by a call of its own only when it was not. Never
        both at once: the engine's removal of the tag's digests fails ("reference does not
        exist") when another call removed one of them meanwhile."""
        if wanted.digest:
            log.warning("image %s is pinned by digest; it stays named %s", image, pulled)
            return
        failure = _Failure(
            f"cannot pull image {image}: pulled as {pulled} but tagging failed", PullFailedError
        )
        tag = {"repo": wanted.repository, "tag": wanted.tag or "latest"}
        await self._call("POST", f"images/{_segment(pulled)}/tag", failure, params=tag)
        dropping = _Failure(
            f"cannot pull image {image}: pulled as {pulled}, but that name could not be removed",
            PullFailedError,
        )
        untagged = await self._call(
            "DELETE", f"images/{_segment(pulled)}", dropping, params={"noprune": "1"}
        )
        if recorded and recorded not in {item.get("Untagged") for item in untagged or []}:
            gone = _Failure(dropping.what, PullFailedError, by_status={404: None})
            await self._call(
                "DELETE", f"images/{_segment(recorded)}", gone, params={"noprune": "1"}
            )

    # --- the engine's side of agent downloads (`cua.download.fetch.ImageStore`) ------------

    async def engine_platform(self) -> Platform:
        """From the API version negotiation's /version: no call of its own."""
        await self._negotiate()
        from cua.download.manifests import Platform

        return Platform(*self._os_arch)

    async def data_root(self) -> str:
        return str((await self._info()).get("DockerRootDir") or "")

    async def engine_registries(self) -> EngineRegistries:
        from cua.download.engine_registries import EngineRegistries

        return EngineRegistries.from_engine_info(await self._info())

    async def _info(self) -> Mapping[str, Any]:
        """`GET /info`, read again once `INFO_FRESH_FOR` has passed: a costly call for the
        engine, whose data root and registry settings change only with a restart or a
        reload of it; the pulls of an update, which start together, share one read, and a
        later update sees what a restart or a reload changed meanwhile."""
        async with self._info_lock:
            now = asyncio.get_running_loop().time()
            if self._info_read is None or now - self._info_at >= INFO_FRESH_FOR:
                failure = _Failure("cannot read the engine's data root and registry settings")
                info = await self._call("GET", "info", failure)
                self._info_read = info if isinstance(info, Mapping) else {}
                self._info_at = now
            return self._info_read

    async def layer_chains(self) -> list[list[str]]:
        """The layers of each image the engine holds (`RootFS.Layers`, base first), its
        images inspected `INSPECTS_AT_ONCE` at a time and each once (`_image_by_id`): an
        agent download's start waits for this read, and an engine call per image is 5 to
        10 ms on a busy engine."""
        failure = _Failure("cannot list images", by_status={404: None})
        listed = await self._call("GET", "images/json", failure) or []
        ids = [str(summary.get("Id", "")) for summary in listed]
        limit = asyncio.Semaphore(INSPECTS_AT_ONCE)
        found: dict[str, dict[str, Any] | None] = {}

        async def inspect(image_id: str) -> None:
            async with limit:
                found[image_id] = await self._image_by_id(image_id)  # None: removed meanwhile

        try:
            async with asyncio.TaskGroup() as group:
                for image_id in ids:
                    group.create_task(inspect(image_id))
        except* EngineError as failed:
            raise failed.exceptions[0] from None
        return [
            list((image.get("RootFS") or {}).get("Layers") or [])
            for image in (found[image_id] for image_id in ids)
            if image is not None
        ]

    async def load_image(self, config: Member, layers: Sequence[Member | None], tag: str) -> None:
        """`POST /images/load` of the archive, sent as its members' bytes come (the engine
        unpacks while the agent downloads); the engine's answer is awaited for at most
        `pull_stall_timeout` once the last byte is sent."""
        from cua.engine.docker_archive import DockerArchive

        archive = DockerArchive(config, layers, tag)
        failure = _Failure(f"cannot pull image {tag}: the engine did not load it", PullFailedError)
        http = await self._negotiate()
        with self._engine_errors(failure):
            async with asyncio.timeout(None) as answer_due:

                async def body() -> AsyncIterator[bytes]:
                    async for chunk in archive.chunks():
                        yield chunk
                    answer_due.reschedule(
                        asyncio.get_running_loop().time() + self.pull_stall_timeout
                    )

                response = await http.upload(
                    "POST", self._path("images/load"), body(), archive.length, params={"quiet": "1"}
                )
            for line in response.body.splitlines():
                message = json.loads(line) if line.strip() else {}
                if message.get("error"):
                    raise PullFailedError(f"{failure.what}: {message['error']}")

    async def pull_local(self, reference: str, tag: str) -> None:
        """`POST /images/create` of `reference` (the agent's loopback registry serving the
        blobs as they land), then the image named `tag` only: the loopback names (tag and
        repo digest) are removed."""
        local = ImageReference.parse(reference)
        failure = _Failure(f"cannot pull image {tag}", PullFailedError)
        stalled = PullFailedError(
            f"cannot pull image {tag}: no progress for {self.pull_stall_timeout:g} s"
        )
        http = await self._negotiate()
        digest = ""
        async with contextlib.AsyncExitStack() as stack:
            with self._engine_errors(failure):
                try:
                    async with asyncio.timeout(self.pull_stall_timeout):
                        response = await stack.enter_async_context(
                            http.stream(
                                "POST", self._path("images/create"), params=pull_params(local)
                            )
                        )
                except TimeoutError:
                    raise stalled from None
            with self._engine_errors(_Failure(failure.what, PullFailedError, broken_stream=True)):
                while line := await _readline(response, self.pull_stall_timeout, stalled):
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if message.get("error"):
                        raise PullFailedError(f"{failure.what}: {message['error']}")
                    status = str(message.get("status") or "")
                    if status.startswith("Digest: "):
                        digest = status.removeprefix("Digest: ").strip()
        recorded = f"{local.repository}@{digest}" if digest else ""
        await self._retag(reference, ImageReference.parse(tag), tag, recorded)

    async def create_container(
        self, name: str, spec: ContainerSpec, labels: Mapping[str, str]
    ) -> str:
        extra_hosts = [await self._resolve_extra_host(name, entry) for entry in spec.extra_hosts]
        body = create_body(spec, labels, [h for h in extra_hosts if h])
        body["Image"] = self._local_name(spec.image)
        failure = _Failure(
            f"cannot create container {name}",
            CreateFailedError,
            by_status={
                409: NameConflictError(
                    f"cannot create container {name}: the name is already in use "
                    "by another container"
                ),
                404: ImageNotFoundError(
                    f"cannot create container {name}: image {spec.image} is not present"
                ),
            },
        )
        created = await self._call(
            "POST", "containers/create", failure, params={"name": name}, body=body
        )
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
        failure = _Failure(
            f"cannot start container {container}",
            StartFailedError,
            by_status={404: _not_found(container)},
        )
        try:
            await self._call("POST", f"containers/{_segment(container)}/start", failure)
        except StartFailedError as error:  # named as people know it (callers pass the id)
            name = await self._name_for_message(container)
            reason = str(error).removeprefix(f"{failure.what}: ")
            raise StartFailedError(f"cannot start container {name}: {reason}") from None

    async def container_logs(self, container: str, lines: int) -> list[str]:
        data = await self._inspect_raw(container)  # its TTY says how the log is framed
        if lines <= 0:
            return []
        failure = _Failure(
            f"cannot read the log of {container}", by_status={404: _not_found(container)}
        )
        http = await self._negotiate()
        params = {"stdout": "1", "stderr": "1", "tail": str(lines)}
        with self._engine_errors(failure):
            async with asyncio.timeout(self.timeout):
                response = await http.request(
                    "GET", self._path(f"containers/{_segment(container)}/logs"), params=params
                )
            tty = bool((data.get("Config") or {}).get("Tty"))
            return log_lines(response.body, tty)[-lines:]
        return []

    async def stop_container(self, container: str, grace_period: float = 30.0) -> None:
        seconds = max(0, math.ceil(grace_period))
        failure = _Failure(
            f"cannot stop container {container}", by_status={404: _not_found(container)}
        )
        await self._call(
            "POST",
            f"containers/{_segment(container)}/stop",
            failure,
            params={"t": str(seconds)},
            limit=self.timeout + seconds,
        )

    async def remove_container(self, container: str) -> None:
        failure = _Failure(
            f"cannot remove container {container}",
            by_status={404: None},
            by_text={"already in progress": None},
        )
        await self._call(
            "DELETE", f"containers/{_segment(container)}", failure, params={"force": "1", "v": "1"}
        )

    async def rename_container(self, container: str, new_name: str) -> None:
        failure = _Failure(
            f"cannot rename container {container} to {new_name}",
            CreateFailedError,
            by_status={
                404: _not_found(container),
                409: NameConflictError(
                    f"cannot rename container {container} to {new_name}: "
                    "the name is already in use by another container"
                ),
            },
            by_text={"same name": None},
        )
        await self._call(
            "POST", f"containers/{_segment(container)}/rename", failure, params={"name": new_name}
        )

    async def update_container(
        self, container: str, restart: RestartPolicy, resources: Resources | None
    ) -> None:
        try:
            body = update_body(restart, resources)
        except CreateFailedError as error:
            raise EngineError(f"cannot update container {container}: {error}") from None
        failure = _Failure(
            f"cannot update container {container}", by_status={404: _not_found(container)}
        )
        await self._call("POST", f"containers/{_segment(container)}/update", failure, body=body)

    async def pause_container(self, container: str) -> None:
        await self._state_change(container, "pause")

    async def unpause_container(self, container: str) -> None:
        await self._state_change(container, "unpause")

    async def _state_change(self, container: str, action: str) -> None:
        failure = _Failure(
            f"cannot {action} container {container}",
            # Docker answers 409, or 500 for "is not paused" (20.10).
            by_status={404: _not_found(container), 409: ContainerStateError},
            by_text={"is not paused": ContainerStateError},
        )
        await self._call("POST", f"containers/{_segment(container)}/{action}", failure)

    def events(self) -> AsyncIterator[ContainerEvent]:
        return _DockerEventStream(self, time.time_ns())

    async def close(self) -> None:
        if self.downloader is not None:
            await self.downloader.close()
        if self._http is not None:
            http, self._http = self._http, None
            self.api_version = ""
            await http.aclose()


def _os_arch(version: Mapping[str, Any]) -> tuple[str, str]:
    return str(version.get("Os", "linux")), str(version.get("Arch", ""))


async def _readline(response: StreamedResponse, seconds: float, stalled: EngineError) -> bytes:
    """The stream's next line; `stalled` when nothing comes for `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await response.readline()
    except TimeoutError:
        raise stalled from None


class _DockerEventStream:
    """GET /events from the moment `events()` was called (`since`), container events only.

    Opening lazily with `since` means no event between the call and the first iteration is
    lost. Only opening the stream is bounded by the timeout; waiting for events is not.
    """

    def __init__(self, engine: DockerEngine, since_ns: int) -> None:
        self._engine = engine
        self._since_ns = since_ns
        self._stack: contextlib.AsyncExitStack | None = None
        self._response: StreamedResponse | None = None
        self._closed = False

    def __aiter__(self) -> _DockerEventStream:
        return self

    async def _open(self) -> StreamedResponse:
        engine = self._engine
        http = await engine._negotiate()
        seconds, nanos = divmod(self._since_ns, 1_000_000_000)
        params = {
            "since": f"{seconds}.{nanos:09d}",
            "filters": json.dumps({"type": ["container"]}),
        }
        self._stack = contextlib.AsyncExitStack()
        with engine._engine_errors(_Failure("cannot watch the container engine's events")):
            async with asyncio.timeout(engine.timeout):
                return await self._stack.enter_async_context(
                    http.stream("GET", engine._path("events"), params=params)
                )
        raise AssertionError("unreachable: every API error of the event stream is one")

    async def __anext__(self) -> ContainerEvent:
        if self._closed:
            raise StopAsyncIteration
        try:
            if self._response is None:
                self._response = await self._open()
            while True:
                with self._engine._engine_errors(None):
                    line = await self._response.readline()
                if not line:
                    raise StopAsyncIteration
                if not line.strip():
                    continue
                raw = json.loads(line)
                if raw.get("Type") not in (None, "container"):
                    continue
                if int(raw.get("timeNano") or 0) < self._since_ns:
                    continue
                return event_from_docker(raw)
        except Exception:  # the end, or a failure: the stream is done (not on cancellation)
            await self.aclose()
            raise

    async def aclose(self) -> None:
        self._closed = True
        self._response = None
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
