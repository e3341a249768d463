"""The device's current state (spec §5): the inventory built from the engine's containers.

Owned by the agent, which publishes it (on connect, on request, after container changes),
and used by `cua state`; it has nothing to do with running operations. Only the root node
when the engine fails, as Kanto. Containers an operation has in flight (a new one not yet
activated, an old one renamed aside until CLEANUP) are not the device's containers: the
inventory shows each component once, under its real name. manage: labelled reports only this
domain's containers and the configured system containers (our-behaviour "Containers that
the agent owns": the others' env may hold secrets); manage: all every one, as Kanto
(`identify.reported`, `identify.inventory_entry`).
"""

from __future__ import annotations

import asyncio
import logging

from cua import __version__
from cua.api.models import Inventory
from cua.containers.inventory import InventoryContainer, build_inventory
from cua.containers.state import ContainerSummary
from cua.engine.base import ContainerNotFoundError, Engine, EngineError, EngineUnavailableError
from cua.settings import Manage, UpdateSettings
from cua.update.identify import inventory_entry, map_concurrently, reported

__all__ = ["EARLY_STATE_MAX_AGE", "CurrentStateReader", "EarlyRead"]

log = logging.getLogger(__name__)

# The engine is read at start while the broker connection is made: that read answers the
# first connect's current state if the connect came within this many seconds.
EARLY_STATE_MAX_AGE = 2.0


class CurrentStateReader:
    """Reads the current state of one domain's device from the engine."""

    def __init__(self, engine: Engine, settings: UpdateSettings) -> None:
        self._engine = engine
        self._settings = settings

    async def read(self) -> Inventory:
        """The §5 inventory; only the root node when the engine fails (as Kanto)."""
        try:
            containers = await self._containers()
        except EngineUnavailableError as error:
            log.debug("current state: cannot list containers: %s", error)  # reported by the
            containers = []  # agent's engine watcher, once, not at every current state
        except EngineError as error:
            log.warning("current state: cannot list containers: %s", error)
            containers = []
        return build_inventory(
            self._settings.domain,
            __version__,
            containers,
            verbose=self._settings.verbose_inventory,
            mark_unmanaged=self._settings.manage is Manage.LABELLED,
        )

    async def _containers(self) -> list[InventoryContainer]:
        summaries = sorted(
            (s for s in await self._engine.list_containers() if reported(s, self._settings)),
            key=lambda s: s.name,
        )

        async def one(summary: ContainerSummary) -> InventoryContainer | None:
            try:
                details = await self._engine.inspect_container(summary.id)
            except ContainerNotFoundError:
                return None  # removed since it was listed
            return inventory_entry(details, self._settings)

        return [entry for entry in await map_concurrently(summaries, one) if entry is not None]


class EarlyRead:
    """The current state read made as the agent starts, before its broker connection is up:
    the first connect's reply need not wait for a read after the CONNACK. `cua run` starts
    it before importing the MQTT side (README Performance, start-up), in `group`."""

    def __init__(self, reader: CurrentStateReader, group: asyncio.TaskGroup) -> None:
        self.started = asyncio.get_running_loop().time()
        self._task: asyncio.Task[Inventory | None] | None = group.create_task(
            self._read(reader), name="early-state"
        )

    @staticmethod
    async def _read(reader: CurrentStateReader) -> Inventory | None:
        try:
            return await reader.read()
        except Exception:  # a bug here must not stop the agent
            log.exception("cannot build the current state at start")
            return None

    async def take(self) -> Inventory | None:
        """The read, once, if it is still young (EARLY_STATE_MAX_AGE) and did not fail;
        None otherwise (the caller reads again)."""
        task, self._task = self._task, None
        if task is None:
            return None
        age = asyncio.get_running_loop().time() - self.started
        inventory = await task if age <= EARLY_STATE_MAX_AGE else None
        task.cancel()  # done, or not wanted
        return inventory

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
