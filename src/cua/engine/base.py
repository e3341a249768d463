"""The `Engine` protocol: the agent's only door to containers.

Nothing here is Docker-specific. `cua.engine.docker` implements it on the Docker Engine
API; `cua.testing.fake_engine` implements it in memory for tests of pure logic. One
contract test suite runs against both, so the fake cannot drift from the real engine.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from cua.containers.spec import ContainerSpec, Resources, RestartPolicy
from cua.containers.state import ContainerDetails, ContainerSummary


@dataclass(frozen=True, slots=True)
class PullProgress:
    """Bytes done / total for one image pull. `total` is 0 while unknown."""

    image: str
    done: int
    total: int
    complete: bool = False


class EventAction(StrEnum):
    CREATE = "create"
    START = "start"
    STOP = "stop"
    DIE = "die"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    RENAME = "rename"
    UPDATE = "update"
    DESTROY = "destroy"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    action: EventAction
    container_id: str
    name: str
    raw_action: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


# --- errors -------------------------------------------------------------------------------


class EngineError(Exception):
    """Base of all engine errors. `str(error)` is a message a person can act on."""


class EngineUnavailableError(EngineError):
    """The engine cannot be reached (socket missing, refused, or a call timed out)."""


def unreachable_reason(error: BaseException) -> str:
    """Why the engine cannot be reached, in words, without the client library's internals:
    `no such socket`, `connection refused`, `permission denied` (from the OS error at the
    root of `error`), else the error's own text."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _REASONS:
            return _REASONS[current.errno]
        current = current.__cause__ or current.__context__
    return str(error) or type(error).__name__


_REASONS = {
    errno.ENOENT: "no such socket (is the engine installed and running?)",
    errno.ECONNREFUSED: "connection refused (is the engine running?)",
    errno.EACCES: "permission denied (run as root or as a member of the docker group)",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


class ContainerNotFoundError(EngineError):
    pass


class NameConflictError(EngineError):
    pass


class ImageNotFoundError(EngineError):
    """The image is not present locally (no pull was attempted)."""


class PullFailedError(EngineError):
    """A pull failed; the message carries the registry's reason."""


class CreateFailedError(EngineError):
    """The engine refused to create a container (bad config for this engine)."""


class StartFailedError(EngineError):
    """A container failed to start; the message carries the engine's reason."""


class ContainerStateError(EngineError):
    """The container is not in a state that allows the operation (e.g. pausing a stopped one)."""


# --- the protocol -----------------------------------------------------------------------


@runtime_checkable
class Engine(Protocol):
    """What the update operations need from a container engine, and nothing more."""

    async def list_containers(self) -> list[ContainerSummary]:
        """All containers (running or not), in one engine call."""
        ...

    async def inspect_container(self, container: str) -> ContainerDetails:
        """One container by id or name. Raises ContainerNotFoundError."""
        ...

    async def image_present(self, image: str) -> bool: ...

    def pull_image(self, image: str) -> AsyncIterator[PullProgress]:
        """Pull `image` (through a configured mirror, tagged as `image`), yielding progress.

        The last item has `complete=True`. Raises PullFailedError.
        """
        ...

    async def create_container(
        self, name: str, spec: ContainerSpec, labels: Mapping[str, str]
    ) -> str:
        """Create (not start) a container named `name` from `spec`; returns its id.

        The image must be present. Raises NameConflictError, ImageNotFoundError,
        CreateFailedError.
        """
        ...

    async def start_container(self, container: str) -> None:
        """Raises StartFailedError with the engine's reason."""
        ...

    async def container_logs(self, container: str, lines: int) -> list[str]:
        """The last `lines` lines the container wrote (stdout and stderr, oldest first).

        Raises ContainerNotFoundError."""
        ...

    async def stop_container(self, container: str, grace_period: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `grace_period` seconds. No error if already stopped."""
        ...

    async def remove_container(self, container: str) -> None:
        """Force-remove (a running container is killed). No error if it is already gone."""
        ...

    async def rename_container(self, container: str, new_name: str) -> None: ...

    async def update_container(
        self, container: str, restart: RestartPolicy, resources: Resources | None
    ) -> None:
        """Runtime update of restart policy and memory limits (None: leave limits)."""
        ...

    async def pause_container(self, container: str) -> None: ...

    async def unpause_container(self, container: str) -> None: ...

    def events(self) -> AsyncIterator[ContainerEvent]:
        """Container events from now on, until the engine connection ends."""
        ...

    async def close(self) -> None: ...


async def ensure_image(
    engine: Engine, image: str, *, always: bool = False
) -> AsyncIterator[PullProgress]:
    """Pull `image` if it is missing (or always, when `always`), yielding the pull's progress.

    Yields nothing when the image is present and `always` is false. Pulling is the caller's
    choice (Kanto pulls only when missing), so `Engine.pull_image` itself always pulls.
    """
    if not always and await engine.image_present(image):
        return
    async for progress in engine.pull_image(image):
        yield progress
