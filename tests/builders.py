"""The one builder module of the tests: components and desired states, containers on the
fake engine, feedback payloads and status sequences, settings, operations and managers.

Kanto's feedback texts are written out here once (not imported from the code under test),
so a changed text fails the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from cua.api.models import (
    Baseline,
    ComponentWithConfig,
    DesiredState,
    DesiredStateFeedback,
    Domain,
    KeyValuePair,
)
from cua.containers.labels import encode_labels
from cua.containers.parse import parse_component
from cua.containers.spec import LogConfig, LogDriver, LogMode, Resources, recorded_size
from cua.containers.state import ContainerStatus
from cua.settings import UpdateSettings
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.journal import journal_for
from cua.update.manager import UpdateManager
from cua.update.operation import Operation
from cua.update.publisher import Delivered

DOMAIN = "containers"
HELLO = "docker.io/library/hello-world:latest"

M_CREATE = "New container will be created and started."
M_RECREATE = "Existing container will be destroyed and replaced by a new one."
M_UPDATE = "Existing container will be updated with new configuration."
M_CHECK = "No changes detected, existing container will be check only if it is running."
M_DESTROY = "Existing container will be destroyed, no longer needed."
M_CREATED = "New container created."
M_STOPPED = "Old container instance is stopped."
M_UPDATED = "Container instance is updated with new configuration."
M_RUNNING = "Existing container instance is running."
M_STARTED = "New container instance is started."
M_REMOVED = "Old container instance is removed."
M_RB_UPDATE = (
    "Update unsuccessful, but rollback succeeded - "
    "container configuration restored from older instance."
)
M_RB_RECREATE = (
    "Update unsuccessful, but rollback succeeded - "
    "new container instance destroyed, old container instance restored."
)
M_RB_CREATE = "Update unsuccessful, but rollback succeeded - new container instance destroyed."


def memory_limits(
    memory: str = "", memory_reservation: str = "", memory_swap: str = ""
) -> Resources:
    """`Resources` from size texts ("" not set, "-1" unlimited), as a label records them."""
    return Resources(*map(recorded_size, (memory, memory_reservation, memory_swap)))


def log_config(
    driver: LogDriver = LogDriver.JSON_FILE,
    max_files: int = 2,
    *,
    max_size: str = "100M",
    root_dir: str = "",
    mode: LogMode = LogMode.BLOCKING,
    max_buffer_size: str = "",
) -> LogConfig:
    """`LogConfig` with its sizes as texts ("" not set), as a label records them."""
    return LogConfig(
        driver, max_files, recorded_size(max_size), root_dir, mode, recorded_size(max_buffer_size)
    )


def component(
    name: str = "c",
    version: str = "1.0",
    *,
    pairs: Iterable[tuple[str, str]] = (),
    **config: str | list[str],
) -> ComponentWithConfig:
    """A desired component: `pairs` (any keys, repeated, in order), then `config` (a list
    value repeats its key)."""
    entries = [KeyValuePair(key=key, value=value) for key, value in pairs]
    for key, value in config.items():
        for item in value if isinstance(value, list) else [value]:
            entries.append(KeyValuePair(key=key, value=item))
    return ComponentWithConfig(id=name, version=version, config=entries)


def desired(
    *components: ComponentWithConfig,
    domain: str = DOMAIN,
    baselines: Mapping[str, Sequence[str]] | None = None,
    config: Iterable[tuple[str, str]] = (),
) -> DesiredState:
    """A desired state of one domain; `baselines`: title -> member component ids."""
    return DesiredState(
        domains=[
            Domain(
                id=domain,
                components=list(components),
                config=[KeyValuePair(key=key, value=value) for key, value in config],
            )
        ],
        baselines=[
            Baseline(title=title, components=list(members))
            for title, members in (baselines or {}).items()
        ],
    )


def add_managed(
    engine: FakeEngine,
    name: str,
    version: str = "1.0",
    *,
    running: bool = True,
    **config: str | list[str],
) -> str:
    """A container as this agent would have created it from `component(name, ...)`."""
    parsed = parse_component(component(name, version, **config))
    return engine.add_container(name, parsed.spec, encode_labels(parsed, DOMAIN), running=running)


async def until(condition: Callable[[], bool]) -> None:
    """Poll for a state a background task reaches (fails after 5 s, never slow)."""
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - the state has no event to wait on
            await asyncio.sleep(0.005)


def status_of(engine: FakeEngine, name: str) -> ContainerStatus | None:
    """The state of the fake engine's container `name` (None: no such container)."""
    for summary in engine._containers.values():
        if summary.name == name:
            return summary.status
    return None


async def assert_only_container(
    engine: FakeEngine,
    name: str,
    container_id: str,
    status: ContainerStatus = ContainerStatus.RUNNING,
) -> None:
    """The device holds `name` alone, and it is the very container `container_id` (put
    back, not a re-created one), in `status`."""
    names = engine.container_names()
    details = await engine.inspect_container(name)
    found = (names, details.id, details.state.status)
    assert found == ([name], container_id, status), found  # (not a test module: no rewrite)


def act(name: str, status: str, message: str, version: str = "1.0") -> dict[str, Any]:
    return {
        "component": {"id": f"{DOMAIN}:{name}", "version": version},
        "status": status,
        "message": message,
    }


def fb(
    status: str, *actions: dict[str, Any], baseline: str = "", message: str = ""
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if baseline:
        result["baseline"] = baseline
    result["status"] = status
    if message:
        result["message"] = message
    if actions:
        result["actions"] = list(actions)
    return result


# --- status sequences (§3.4.1, progress collapsed) -------------------------------------------

NOTHING_TO_DO = ["IDENTIFYING", "IDENTIFIED", "COMPLETED"]


def standalone_statuses(
    *,
    downloading: int = 1,
    updating: int = 0,
    activating: int = 1,
    fails: Literal["", "DOWNLOAD", "UPDATE", "ACTIVATION"] = "",
) -> list[str]:
    """The statuses of a standalone run: one DOWNLOADING per action that downloads (CREATE,
    RECREATE), one UPDATING per action UPDATE works on (RECREATE, DESTROY, UPDATE), one
    ACTIVATING per action that activates (all but DESTROY). `fails`: DOWNLOAD, UPDATE or
    ACTIVATION ends with its failure, then the ROLLBACK of one action, CLEANUP, INCOMPLETE."""
    statuses = ["IDENTIFYING", "IDENTIFIED"]
    for running, count, phase in (
        ("DOWNLOADING", downloading, "DOWNLOAD"),
        ("UPDATING", updating, "UPDATE"),
        ("ACTIVATING", activating, "ACTIVATION"),
    ):
        statuses += [running] * count
        if phase == fails:
            rolled_back = ["ROLLBACK", "ROLLBACK_SUCCESS", "CLEANUP_SUCCESS", "INCOMPLETE"]
            return [*statuses, f"{phase}_FAILURE", *rolled_back]
        statuses.append(f"{phase}_SUCCESS")
    return [*statuses, "CLEANUP_SUCCESS", "COMPLETED"]


# --- settings, operations, managers ------------------------------------------------------------


def settings(**overrides: Any) -> UpdateSettings:
    base: dict[str, Any] = {
        "stop_grace_period": 0.0,
        "progress_interval": 0.01,
        "activation_window": 0.001,  # watched, briefly (the fake settles at once)
    }
    base.update(overrides)
    return UpdateSettings(**base)


async def operation(
    engine: FakeEngine,
    publisher: RecordingPublisher,
    state: DesiredState,
    activity_id: str = "A",
    state_dir: Path | None = None,
    **overrides: Any,
) -> Operation:
    """An identified operation (IDENTIFIED published), as the orchestrated flow holds it;
    journaled in `state_dir` if given."""
    the_settings = settings(**overrides)
    plan = await UpdateManager(engine, publisher, the_settings).plan(state)
    journal = journal_for(state_dir, DOMAIN)
    op = Operation(activity_id, plan, engine, publisher, the_settings, journal=journal)
    await op.publish_identified()
    return op


class Running:
    """A manager whose run() is a background task for the test."""

    def __init__(self, engine: FakeEngine, publisher: Any, **overrides: Any) -> None:
        self.manager = UpdateManager(engine, publisher, settings(**overrides))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> UpdateManager:
        self.task = asyncio.create_task(self.manager.run())
        return self.manager

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.manager.stop(), 5)
        assert self.task is not None
        await self.task


class GatedPublisher(RecordingPublisher):
    """Records feedback; after a message with status `status`, waits until `gate` is set
    (the operation is held there, e.g. for commands to arrive while it runs)."""

    def __init__(self, status: str = "DOWNLOADING") -> None:
        super().__init__()
        self.status = status
        self.gate = asyncio.Event()

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Delivered | None = None,
    ) -> None:
        await super().publish_feedback(activity_id, feedback, on_delivered)
        if feedback.status == self.status:
            await self.gate.wait()
