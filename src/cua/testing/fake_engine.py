"""`FakeEngine`: an in-memory `Engine` for unit tests of pure logic.

It follows the same contract as the Docker adapter (the contract suite in
`tests/integration/test_engine_contract.py` runs against both): names are unique, a container is
found by id, unique id prefix or name, create needs the image to be present, pulls of
images the fake "registry" does not hold fail, state changes follow Docker's rules and emit
the same events. Test knobs let a test inject failures and count the engine calls made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cua.containers.spec import ContainerSpec, Resources, RestartPolicy
from cua.containers.state import ContainerDetails, ContainerState, ContainerStatus, ContainerSummary
from cua.engine.base import (
    ContainerEvent,
    ContainerNotFoundError,
    ContainerStateError,
    CreateFailedError,
    EngineUnavailableError,
    EventAction,
    ImageNotFoundError,
    NameConflictError,
    PullFailedError,
    PullProgress,
    StartFailedError,
)

# Docker's rule for container names (stricter than Kanto's: no leading `_`, two chars min).
_VALID_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

_PULL_STEPS = 4
_UP = (ContainerStatus.RUNNING, ContainerStatus.PAUSED)


def now_rfc3339() -> str:
    """The current UTC time as Docker prints it (RFC3339 with nanoseconds)."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


@dataclass(frozen=True, slots=True)
class EngineCall:
    """One call made to the fake, for tests that count engine calls."""

    method: str
    args: tuple[Any, ...] = ()


@dataclass(slots=True)
class _Container:
    id: str
    name: str
    spec: ContainerSpec
    labels: dict[str, str]
    created: str
    status: ContainerStatus = ContainerStatus.CREATED
    exit_code: int = 0
    started_at: str = ""
    finished_at: str = ""
    restart_count: int = 0
    health: str = ""
    logs: list[str] = dataclasses.field(default_factory=list)
    address: str = ""  # given at each start, as the engine's bridge does; kept while up

    def state(self) -> ContainerState:
        return ContainerState(
            status=self.status,
            exit_code=self.exit_code,
            started_at=self.started_at,
            finished_at=self.finished_at,
            restart_count=self.restart_count,
            health=self.health,
        )


@dataclass(frozen=True, slots=True)
class _AfterStart:
    """A scripted behaviour of a started container (`FakeEngine.behave_after_start`)."""

    exit_code: int | None
    restarts: int
    health: str
    logs: tuple[str, ...]

    def apply(self, container: _Container) -> None:
        container.logs.extend(self.logs)
        container.health = self.health
        container.restart_count = self.restarts
        if self.exit_code is not None:
            container.status = ContainerStatus.EXITED
            container.exit_code = self.exit_code
            container.finished_at = now_rfc3339()


class _EventStream:
    """Subscribed when created (not when first iterated), so no event is missed."""

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[ContainerEvent | None] = asyncio.Queue()
        engine._subscribers.append(self._queue)

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> ContainerEvent:
        item = await self._queue.get()
        if item is None:
            self._unsubscribe()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._unsubscribe()

    def _unsubscribe(self) -> None:
        if self._queue in self._engine._subscribers:
            self._engine._subscribers.remove(self._queue)


class FakeEngine:
    """An in-memory container engine with knobs for tests.

    Knobs: `add_image`, `add_registry_image`, `add_container`, `fail_start`, `fail_pull`,
    `fail_next`, `exit_container`, `behave_after_start`, `available`; `calls` logs every
    engine call made.
    """

    def __init__(self) -> None:
        self.calls: list[EngineCall] = []
        self.available = True
        self._images: dict[str, int] = {}
        self._image_labels: dict[str, dict[str, str]] = {}
        self._registry: dict[str, int] = {}
        self._containers: dict[str, _Container] = {}  # by id, in creation order
        self._start_failures: dict[str, str] = {}
        self._after_start: dict[str, _AfterStart] = {}
        self._addresses = 0  # addresses handed out (a new one at every start)
        self._pull_failures: dict[str, str] = {}
        self._next_failures: dict[str, deque[BaseException]] = {}
        self._subscribers: list[asyncio.Queue[ContainerEvent | None]] = []

    # --- knobs -----------------------------------------------------------------------------

    def add_image(
        self, ref: str, size: int = 1_000_000, labels: Mapping[str, str] | None = None
    ) -> None:
        """Make `ref` present locally; `labels`: the image's own `LABEL`s, copied onto the
        containers created from it (as Docker does)."""
        self._images[ref] = size
        self._image_labels[ref] = dict(labels or {})

    def remove_image(self, ref: str) -> None:
        self._images.pop(ref, None)

    def add_registry_image(self, ref: str, size: int = 1_000_000) -> None:
        """Make `ref` pullable (the fake registry holds it)."""
        self._registry[ref] = size

    def fail_start(self, name_or_image: str, reason: str) -> None:
        """Every start of a container with this name, id or image fails with `reason`."""
        self._start_failures[name_or_image] = reason

    def clear_start_failure(self, name_or_image: str) -> None:
        self._start_failures.pop(name_or_image, None)

    def behave_after_start(
        self,
        name_or_image: str,
        *,
        exit_code: int | None = None,
        restarts: int = 0,
        health: str = "",
        logs: tuple[str, ...] = (),
    ) -> None:
        """What a started container of this name, id or image does at once: exit with
        `exit_code` (None: keep running), be restarted `restarts` times by its restart
        policy, report `health`, and have written `logs`."""
        self._after_start[name_or_image] = _AfterStart(exit_code, restarts, health, logs)

    def fail_pull(self, ref: str, reason: str) -> None:
        """Every pull of `ref` fails with `reason` (as the registry's reason)."""
        self._pull_failures[ref] = reason

    def fail_next(self, method: str, error: BaseException) -> None:
        """The next call of `method` (e.g. "stop_container") raises `error` (queued, FIFO)."""
        self._next_failures.setdefault(method, deque()).append(error)

    def add_container(
        self,
        name: str,
        spec: ContainerSpec,
        labels: Mapping[str, str] | None = None,
        *,
        running: bool = True,
        status: ContainerStatus | None = None,
        exit_code: int = 0,
    ) -> str:
        """Pre-populate a container (no call logged, no event); its image becomes present."""
        if self._name_taken(name):
            raise NameConflictError(f"container name {name} is already in use")
        self._images.setdefault(spec.image, 1_000_000)
        container = _Container(
            id=secrets.token_hex(32),
            name=name,
            spec=spec,
            labels=dict(labels or {}),
            created=now_rfc3339(),
        )
        if status is None:
            status = ContainerStatus.RUNNING if running else ContainerStatus.CREATED
        container.status = status
        container.exit_code = exit_code
        if status in (ContainerStatus.RUNNING, ContainerStatus.PAUSED, ContainerStatus.EXITED):
            container.started_at = now_rfc3339()
            self._give_address(container)
        if status is ContainerStatus.EXITED:
            container.finished_at = now_rfc3339()
        self._containers[container.id] = container
        return container.id

    def exit_container(self, container: str, exit_code: int = 1) -> None:
        """The container's process ends by itself (emits `die`)."""
        found = self._get(container)
        if found.status in (ContainerStatus.RUNNING, ContainerStatus.PAUSED):
            found.status = ContainerStatus.EXITED
            found.exit_code = exit_code
            found.finished_at = now_rfc3339()
            self._emit(EventAction.DIE, found, exitCode=str(exit_code))

    def _give_address(self, container: _Container) -> None:
        self._addresses += 1
        container.address = f"10.88.{self._addresses // 250}.{self._addresses % 250 + 2}"

    def call_count(self, method: str) -> int:
        return sum(1 for call in self.calls if call.method == method)

    def container_names(self) -> list[str]:
        return [c.name for c in self._containers.values()]

    # --- the Engine protocol ---------------------------------------------------------------

    async def list_containers(self) -> list[ContainerSummary]:
        self._enter("list_containers")
        return [
            ContainerSummary(
                id=c.id, name=c.name, image=c.spec.image, labels=dict(c.labels), status=c.status
            )
            for c in self._containers.values()
        ]

    async def inspect_container(self, container: str) -> ContainerDetails:
        self._enter("inspect_container", container)
        found = self._get(container)
        return ContainerDetails(
            id=found.id,
            name=found.name,
            image=found.spec.image,
            labels=dict(found.labels),
            state=found.state(),
            created=found.created,
            spec=found.spec,
            image_labels=dict(self._image_labels.get(found.spec.image, {})),
            address=found.address if found.status in _UP else "",
        )

    async def image_present(self, image: str) -> bool:
        self._enter("image_present", image)
        return image in self._images

    def pull_image(self, image: str) -> AsyncIterator[PullProgress]:
        return self._pull(image)

    async def _pull(self, image: str) -> AsyncIterator[PullProgress]:
        self._enter("pull_image", image)
        if image in self._pull_failures:
            raise PullFailedError(f"cannot pull image {image}: {self._pull_failures[image]}")
        if image not in self._registry:
            raise PullFailedError(
                f"cannot pull image {image}: manifest unknown: the registry has no such image"
            )
        total = self._registry[image]
        for step in range(1, _PULL_STEPS + 1):
            await asyncio.sleep(0)
            yield PullProgress(image=image, done=total * step // _PULL_STEPS, total=total)
        self._images[image] = total
        yield PullProgress(image=image, done=total, total=total, complete=True)

    async def create_container(
        self, name: str, spec: ContainerSpec, labels: Mapping[str, str]
    ) -> str:
        self._enter("create_container", name, spec, dict(labels))
        if not _VALID_NAME.match(name):
            raise CreateFailedError(
                f"cannot create container {name}: invalid container name, "
                "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )
        if self._name_taken(name):
            raise NameConflictError(
                f"cannot create container {name}: the name is already in use by another container"
            )
        if spec.image not in self._images:
            raise ImageNotFoundError(
                f"cannot create container {name}: image {spec.image} is not present"
            )
        container = _Container(
            id=secrets.token_hex(32),
            name=name,
            spec=spec,
            labels=self._image_labels.get(spec.image, {}) | dict(labels),
            created=now_rfc3339(),
        )
        self._containers[container.id] = container
        self._emit(EventAction.CREATE, container)
        return container.id

    async def start_container(self, container: str) -> None:
        self._enter("start_container", container)
        found = self._get(container)
        if found.status is ContainerStatus.RUNNING:
            return
        if found.status is ContainerStatus.PAUSED:
            raise StartFailedError(
                f"cannot start container {found.name}: "
                "cannot start a paused container, try unpause instead"
            )
        for key in (found.name, found.id, found.spec.image):
            if key in self._start_failures:
                found.exit_code = 128
                raise StartFailedError(
                    f"cannot start container {found.name}: {self._start_failures[key]}"
                )
        found.status = ContainerStatus.RUNNING
        found.exit_code = 0
        found.started_at = now_rfc3339()
        found.restart_count = 0
        self._give_address(found)
        self._emit(EventAction.START, found)
        for key in (found.name, found.id, found.spec.image):
            if key in self._after_start:
                self._after_start[key].apply(found)
                break

    async def container_logs(self, container: str, lines: int) -> list[str]:
        self._enter("container_logs", container, lines)
        found = self._get(container)
        return found.logs[-lines:] if lines > 0 else []

    async def stop_container(self, container: str, grace_period: float = 30.0) -> None:
        self._enter("stop_container", container, grace_period)
        found = self._get(container)
        if found.status not in (ContainerStatus.RUNNING, ContainerStatus.PAUSED):
            return
        found.status = ContainerStatus.EXITED
        found.exit_code = 143
        found.finished_at = now_rfc3339()
        self._emit(EventAction.DIE, found, exitCode="143")
        self._emit(EventAction.STOP, found)

    async def remove_container(self, container: str) -> None:
        self._enter("remove_container", container)
        found = self._find(container)
        if found is None:
            return
        if found.status in (ContainerStatus.RUNNING, ContainerStatus.PAUSED):
            found.status = ContainerStatus.EXITED
            found.exit_code = 137
            self._emit(EventAction.DIE, found, exitCode="137")
        del self._containers[found.id]
        self._emit(EventAction.DESTROY, found)

    async def rename_container(self, container: str, new_name: str) -> None:
        self._enter("rename_container", container, new_name)
        found = self._get(container)
        if new_name == found.name:
            return
        if not _VALID_NAME.match(new_name):
            raise CreateFailedError(
                f"cannot rename container {found.name} to {new_name}: invalid container name"
            )
        if self._name_taken(new_name):
            raise NameConflictError(
                f"cannot rename container {found.name} to {new_name}: "
                "the name is already in use by another container"
            )
        old_name = found.name
        found.name = new_name
        self._emit(EventAction.RENAME, found, oldName="/" + old_name)

    async def update_container(
        self, container: str, restart: RestartPolicy, resources: Resources | None
    ) -> None:
        self._enter("update_container", container, restart, resources)
        found = self._get(container)
        spec = dataclasses.replace(found.spec, restart=restart)
        if resources is not None:
            spec = dataclasses.replace(spec, resources=_updated(spec.resources, resources))
        found.spec = spec
        self._emit(EventAction.UPDATE, found)

    async def pause_container(self, container: str) -> None:
        self._enter("pause_container", container)
        found = self._get(container)
        if found.status is ContainerStatus.PAUSED:
            raise ContainerStateError(f"cannot pause container {found.name}: it is already paused")
        if found.status is not ContainerStatus.RUNNING:
            raise ContainerStateError(f"cannot pause container {found.name}: it is not running")
        found.status = ContainerStatus.PAUSED
        self._emit(EventAction.PAUSE, found)

    async def unpause_container(self, container: str) -> None:
        self._enter("unpause_container", container)
        found = self._get(container)
        if found.status is not ContainerStatus.PAUSED:
            raise ContainerStateError(f"cannot unpause container {found.name}: it is not paused")
        found.status = ContainerStatus.RUNNING
        self._emit(EventAction.UNPAUSE, found)

    def events(self) -> AsyncIterator[ContainerEvent]:
        self._enter("events")
        return _EventStream(self)

    async def close(self) -> None:
        self.calls.append(EngineCall("close"))
        for queue in list(self._subscribers):
            queue.put_nowait(None)

    # --- internals -------------------------------------------------------------------------

    def _enter(self, method: str, *args: Any) -> None:
        self.calls.append(EngineCall(method, args))
        if not self.available:
            raise EngineUnavailableError(
                "cannot reach the container engine (fake engine marked unavailable)"
            )
        queued = self._next_failures.get(method)
        if queued:
            raise queued.popleft()

    def _find(self, container: str) -> _Container | None:
        key = container.removeprefix("/")
        if key in self._containers:
            return self._containers[key]
        for candidate in self._containers.values():
            if candidate.name == key:
                return candidate
        by_prefix = [c for c in self._containers.values() if key and c.id.startswith(key)]
        return by_prefix[0] if len(by_prefix) == 1 else None

    def _name_taken(self, name: str) -> bool:
        # Names only: an id prefix that looks like the name is no conflict (as in Docker).
        return any(c.name == name for c in self._containers.values())

    def _get(self, container: str) -> _Container:
        found = self._find(container)
        if found is None:
            raise ContainerNotFoundError(f"no such container: {container}")
        return found

    def _emit(self, action: EventAction, container: _Container, **attributes: str) -> None:
        attrs = {"name": container.name, "image": container.spec.image, **attributes}
        event = ContainerEvent(
            action=action,
            container_id=container.id,
            name=container.name,
            raw_action=str(action),
            attributes=attrs,
        )
        for queue in self._subscribers:
            queue.put_nowait(event)


def _updated(current: Resources | None, given: Resources) -> Resources | None:
    """Limits after a runtime update, as Docker does it: an empty value leaves that limit
    (Docker cannot remove one at runtime); a new memory without a swap gets the default
    swap (2 x memory, which a spec read back from the engine shows as not set)."""
    old = current or Resources()
    swap = given.memory_swap or (None if given.memory else old.memory_swap)
    merged = Resources(
        memory=given.memory or old.memory,
        memory_reservation=given.memory_reservation or old.memory_reservation,
        memory_swap=swap,
    )
    return None if merged == Resources() else merged


__all__ = ["EngineCall", "FakeEngine", "now_rfc3339"]
