"""What an engine reports of a container: Kanto's status names, its state, as listed and as
inspected (spec §5.4 `status`, `exitCode`, `startedAt`, `finishedAt`, `restartCount`).

Plain values, engine-neutral: the `Engine` protocol (`cua.engine.base`) returns them, the
inventory (`cua.containers.inventory`) and the plan (`cua.update.plan`) read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cua.containers.spec import ContainerSpec


class ContainerStatus(StrEnum):
    """Kanto's container status names (spec §5.4 `status`)."""

    CREATING = "Creating"
    CREATED = "Created"
    RUNNING = "Running"
    STOPPED = "Stopped"
    PAUSED = "Paused"
    EXITED = "Exited"
    DEAD = "Dead"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class ContainerState:
    status: ContainerStatus
    exit_code: int = 0
    started_at: str = ""  # RFC3339Nano UTC, "" if never started
    finished_at: str = ""  # RFC3339Nano UTC, "" if never finished
    restart_count: int = 0  # restarts by the engine's restart policy since the last start
    health: str = ""  # "" (no healthcheck), "starting", "healthy" or "unhealthy"

    @property
    def running(self) -> bool:
        return self.status is ContainerStatus.RUNNING

    @property
    def paused(self) -> bool:
        return self.status is ContainerStatus.PAUSED


@dataclass(frozen=True, slots=True)
class ContainerSummary:
    """One container as listed: one engine call lists them all (no per-container calls)."""

    id: str
    name: str
    image: str  # the image reference the engine reports for the container
    labels: Mapping[str, str]
    status: ContainerStatus


@dataclass(frozen=True, slots=True)
class ContainerDetails:
    """One container as inspected.

    `spec` is what the engine holds, mapped back to a `ContainerSpec` (best effort for
    fields the engine does not keep, which our labels carry instead). `image_labels` are
    the image's own `LABEL`s, which the engine copies onto the container (so that labels
    which only repeat them are not taken for the agent's).
    """

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    state: ContainerState
    created: str  # RFC3339Nano UTC
    spec: ContainerSpec
    image_labels: Mapping[str, str] = field(default_factory=dict)
    address: str = ""  # its IPv4 address on its network while it runs ("" if none)
