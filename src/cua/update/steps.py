"""The engine work of each action, and how to undo it.

Every change made to the device is recorded on the action (`ActionState`), so that
rollback, CLEANUP after a failure (D3) and supersede can put the device back exactly:
remove what was created, start again what was stopped, revert runtime updates (D4).
The changes that names and labels do not show after a crash are also written ahead to the
journal (`journal`), for crash recovery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cua.api.models import ActionStatusType
from cua.containers.compare import IDENTIFIED_MESSAGES, ActionKind
from cua.containers.labels import encode_labels
from cua.containers.mounts import missing_source_message
from cua.containers.spec import Resources, RestartPolicy
from cua.containers.state import ContainerStatus
from cua.engine.base import (
    ContainerNotFoundError,
    CreateFailedError,
    Engine,
    EngineError,
    NameConflictError,
)
from cua.update.hosts import (
    HostResolution,
    addresses_of,
    container_entries,
    container_targets,
    resolve_hosts,
)
from cua.update.journal import Journal
from cua.update.names import new_name, old_name, operation_labels, removed_name
from cua.update.plan import PlannedAction

log = logging.getLogger(__name__)


_WIRE_FIELDS = frozenset({"status", "message", "progress"})


@dataclass(slots=True)
class ActionState:
    """One action of a running operation: its wire status and what it changed so far."""

    planned: PlannedAction
    status: ActionStatusType = ActionStatusType.IDENTIFIED
    message: str = ""
    progress: int = 0
    # --- changes made to the device ---
    new_id: str | None = None  # the container this operation created
    new_active: bool = False  # the new container holds the real name (ACTIVATE)
    old_renamed: bool = False  # the old container was renamed out of the way (ACTIVATE)
    old_stopped: bool = False  # the old (or destroyed) container was stopped by UPDATE
    previous: tuple[RestartPolicy, Resources | None] | None = None  # before UPDATE (D4)
    replaced: bool = False  # a CHECK/UPDATE container replaced for its extra hosts (`hosts`)
    # --- extra hosts `container_<hostname>` (`hosts`) ---
    host_entries: tuple[str, ...] = ()  # what they resolved to when new_id was created
    host_warnings: tuple[str, ...] = ()  # left out at start: said in the feedback message
    # status, message or progress changed since the operation last made its wire Action
    wire_changed: bool = True

    def __post_init__(self) -> None:
        if not self.message:
            self.message = IDENTIFIED_MESSAGES[self.planned.kind]

    def __setattr__(self, name: str, value: object) -> None:
        # Every feedback message carries every action: only those marked are rebuilt.
        object.__setattr__(self, name, value)
        if name in _WIRE_FIELDS:
            object.__setattr__(self, "wire_changed", True)

    @property
    def kind(self) -> ActionKind:
        return self.planned.kind

    @property
    def name(self) -> str:
        return self.planned.name

    @property
    def changed(self) -> bool:
        """Whether undoing this action has anything to do."""
        return (
            self.new_id is not None
            or self.old_renamed
            or self.old_stopped
            or self.previous is not None
        )

    @property
    def host_targets(self) -> tuple[str, ...]:
        """The hostnames its `container_<hostname>` extra hosts name."""
        desired = self.planned.desired
        return () if desired is None else container_targets(desired.spec.extra_hosts)

    def commit(self) -> None:
        """The change is final (cleaned up after activation): nothing to undo any more."""
        self.new_id = None
        self.new_active = self.old_renamed = self.old_stopped = self.replaced = False
        self.previous = None


async def start_unless_running(engine: Engine, container: str, status: ContainerStatus) -> bool:
    """Kanto's ensure-running, given the container's state as just read: running ->
    nothing; paused -> unpause; else start. True when it did something."""
    if status is ContainerStatus.RUNNING:
        return False
    if status is ContainerStatus.PAUSED:
        await engine.unpause_container(container)
    else:
        await engine.start_container(container)
    return True


class DeviceSteps:
    """The engine calls of the phases, one action at a time."""

    def __init__(
        self,
        engine: Engine,
        activity_id: str,
        grace_period: float,
        journal: Journal,
        domain: str,
    ) -> None:
        self._engine = engine
        self._domain = domain
        self._activity_id = activity_id
        self._grace = grace_period
        self._journal = journal
        self._committed = False  # `journal_commit` wrote its record to a journal on disk

    # --- DOWNLOAD -------------------------------------------------------------------------

    async def create_new(self, action: ActionState, hosts: HostResolution | None = None) -> None:
        """CREATE, RECREATE: create the new container, not started, under a temporary name.

        `container_<hostname>` extra hosts: as `hosts` says, else as resolved now."""
        desired = action.planned.desired
        assert desired is not None
        current = action.planned.current
        labels = encode_labels(desired, self._domain) | operation_labels(
            self._activity_id, None if current is None else current.running
        )
        spec = desired.spec
        if action.host_targets:
            if hosts is None:
                hosts = await self.resolve_hosts(action)
            spec = dataclasses.replace(spec, extra_hosts=hosts.extra_hosts)
            action.host_entries = hosts.extra_hosts
        temporary = new_name(action.name)
        try:
            action.new_id = await self._engine.create_container(temporary, spec, labels)
        except NameConflictError:
            # A leftover of an interrupted run (recovery normally removed it already):
            # removed only when it is there, which saves an engine call per container.
            await self._engine.remove_container(temporary)
            action.new_id = await self._engine.create_container(temporary, spec, labels)
        except CreateFailedError as error:
            better = missing_source_message(action.name, spec, str(error))
            if better is None:
                raise
            raise CreateFailedError(better) from None
        # Before ACTIVATE can give it the real name, where its labels alone do not say that
        # it belongs to an unfinished operation (a CREATE has no `.cua-old` beside it).
        self._journal.created(self._activity_id, action.new_id, action.name)

    async def resolve_hosts(self, action: ActionState) -> HostResolution:
        """The action's extra hosts with `container_<hostname>` resolved against the
        containers running now."""
        desired = action.planned.desired
        assert desired is not None
        addresses = await addresses_of(self._engine, action.host_targets)
        return resolve_hosts(desired.spec.extra_hosts, addresses)

    async def hosts_at_start(self, action: ActionState) -> None:
        """CREATE, RECREATE, before the start: resolve the extra hosts again; if they
        changed since the create, create the (not yet started) container again with them."""
        if not action.host_targets:
            return
        assert action.new_id is not None
        hosts = await self.resolve_hosts(action)
        action.host_warnings = hosts.warnings
        if hosts.extra_hosts != action.host_entries and not action.new_active:
            await self._engine.remove_container(action.new_id)
            action.new_id = None
            await self.create_new(action, hosts)

    async def replace_for_hosts(self, action: ActionState) -> bool:
        """CHECK, UPDATE of a running container with `container_<hostname>` extra hosts:
        if they resolve differently now (a target got a new address), an identical
        container with the new ones takes its place and starts; undone as a RECREATE.
        True when it did."""
        current = action.planned.current
        assert current is not None
        hosts = await self.resolve_hosts(action)
        action.host_warnings = hosts.warnings
        details = await self._engine.inspect_container(current.id)
        if details.state.status is not ContainerStatus.RUNNING:
            return False  # started by ensure-running, with the entries it has (Kanto)
        desired = action.planned.desired
        assert desired is not None
        wanted = container_entries(desired.spec.extra_hosts, hosts.extra_hosts)
        if container_entries(desired.spec.extra_hosts, details.spec.extra_hosts) == wanted:
            return False
        log.info("container %s: extra hosts changed; replacing it", action.name)
        await self.create_new(action, hosts)
        await self.stop_old(action)
        await self.activate_new(action)
        action.replaced = True
        return True

    # --- UPDATE ---------------------------------------------------------------------------

    async def stop_old(self, action: ActionState) -> None:
        """RECREATE, DESTROY: stop the current container if it runs or is paused."""
        current = action.planned.current
        assert current is not None
        # Listed as running at identification: stopped without reading its state again (a
        # stop of one that ended since is a no-op for the engine). Listed otherwise: read,
        # as it may have been started since.
        status = current.status
        if not current.running:
            status = (await self._engine.inspect_container(current.id)).state.status
        if status in (ContainerStatus.RUNNING, ContainerStatus.PAUSED):
            self._journal.stopped(self._activity_id, current.id, action.name)
            action.old_stopped = True  # set first: a failed stop may still have stopped it
            await self._engine.stop_container(current.id, self._grace)

    async def stop_old_taking_name(self, action: ActionState) -> None:
        """RECREATE run straight on (standalone): while the engine stops the old container,
        the old one steps aside and the new one takes the name (`take_name`, which ACTIVATE
        would do first). Measured on dockerd (README, Performance): from UPDATING to the
        start, about 5 ms more than the stop itself, against about 20 ms with the renames
        after the stop and 25 ms with the old one renamed before it (a rename of a running
        container is the dearest). Both calls run to their end (none is cancelled: what each
        did is recorded for the undo); the stop's error is raised first, else the renames'.

        The states this passes through are those of an ACTIVATE interrupted after its
        renames: undone by ROLLBACK and CLEANUP (`undo`) and by crash recovery alike."""
        ended = await asyncio.gather(
            self.stop_old(action), self.take_name(action), return_exceptions=True
        )
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome

    async def update_runtime(self, action: ActionState) -> None:
        """UPDATE: restart policy and memory limits to the desired values."""
        current, desired = action.planned.current, action.planned.desired
        assert current is not None
        assert desired is not None
        details = await self._engine.inspect_container(current.id)
        if action.previous is None:
            self._journal.updated(
                self._activity_id,
                current.id,
                action.name,
                details.spec.restart,
                details.spec.resources,
            )
            action.previous = (details.spec.restart, details.spec.resources)
        await self._engine.update_container(
            current.id, desired.spec.restart, desired.spec.resources
        )

    # --- ACTIVATE -------------------------------------------------------------------------

    async def ensure_running(self, container: str, known: ContainerStatus | None = None) -> bool:
        """Kanto's ensure-running: running -> nothing; paused -> unpause; else start.
        True when it did something.

        `known`: the container's status as just listed (ACTIVATE reads ahead); used only
        when it says running, anything else is read again before acting."""
        if known is ContainerStatus.RUNNING:
            return False
        details = await self._engine.inspect_container(container)
        return await start_unless_running(self._engine, container, details.state.status)

    async def take_name(self, action: ActionState) -> None:
        """CREATE, RECREATE: the old container steps aside, the new one takes the name (not
        started). Each rename is recorded on the action as soon as it is done (for the undo);
        one done already is not done again."""
        assert action.new_id is not None
        current = action.planned.current
        if current is not None and not action.old_renamed:
            await self._engine.rename_container(current.id, old_name(action.name))
            action.old_renamed = True
        if not action.new_active:
            await self._engine.rename_container(action.new_id, action.name)
            action.new_active = True

    async def activate_new(self, action: ActionState) -> None:
        """CREATE, RECREATE: the new container takes the name (unless it did already), starts."""
        assert action.new_id is not None
        await self.take_name(action)
        await self._engine.start_container(action.new_id)

    # --- CLEANUP after activation ---------------------------------------------------------

    def journal_commit(self, actions: Sequence[ActionState]) -> None:
        """CLEANUP after activation: these actions' changes are final, for crash recovery
        too (the old containers of RECREATE and DESTROY are then removed). One write, none
        when they changed nothing."""
        records: list[tuple[str, str, bool]] = []
        for action in actions:
            current = action.planned.current
            remove = action.kind in (ActionKind.RECREATE, ActionKind.DESTROY) or action.replaced
            # One that changed nothing has no record for recovery to undo: none to commit
            # (a no-op writes nothing here).
            if current is not None and (remove or action.changed):
                records.append((current.id, action.name, remove))
            if action.new_id is not None:
                records.append((action.new_id, action.name, False))
        self._committed = False
        self._journal.committed(self._activity_id, records)
        self._committed = self._journal.durable

    async def remove_old(self, action: ActionState) -> None:
        """CLEANUP after activation: the old container goes. From here on recovery must
        finish this removal, not undo the update: the journal's commit record says so; where
        there is none (no journal, or its write failed) the `.cua-removed` name does, given
        first. With the record, that name is given only if the removal fails (the container
        stays, and the journal goes once the final status is out)."""
        current = action.planned.current
        assert current is not None
        if not action.old_renamed:
            await self._engine.remove_container(current.id)
            return
        if not self._committed:
            await self._engine.rename_container(current.id, removed_name(action.name))
            await self._engine.remove_container(current.id)
            return
        try:
            await self._engine.remove_container(current.id)
        except EngineError as error:
            try:
                await self._engine.rename_container(current.id, removed_name(action.name))
            except EngineError as rename_error:
                log.warning("container %s: %s", old_name(action.name), rename_error)
            raise error from None

    # --- undo -----------------------------------------------------------------------------

    async def undo(self, action: ActionState, *, ensure_running: bool) -> None:
        """Put back what this action changed. Raises the first engine error (after trying).

        `ensure_running` is ROLLBACK's rule (Kanto: the old container of an UPDATE or a
        RECREATE ends running; D5: started only if it is not running). Without it (CLEANUP
        after a failure, D3; supersede) a container is started again only if we stopped it.
        """
        current = action.planned.current
        if action.previous is not None:
            assert current is not None
            restart, resources = action.previous
            # Docker cannot remove limits at runtime: "no limits before" leaves them (docs).
            await self._engine.update_container(current.id, restart, resources)
            action.previous = None
        if action.new_id is not None:
            if action.new_active and action.old_renamed:
                # Free the real name before the old container takes it back; the new one
                # keeps its temporary name until removed, so a crash here is recoverable.
                await self._engine.rename_container(action.new_id, new_name(action.name))
                action.new_active = False
            if action.old_renamed:
                assert current is not None
                await self._engine.rename_container(current.id, action.name)
                action.old_renamed = False
            await self._engine.remove_container(action.new_id)
            action.new_id = None
            action.new_active = False
        elif action.old_renamed:
            assert current is not None
            await self._engine.rename_container(current.id, action.name)
            action.old_renamed = False
        if current is None:
            return
        restart_old = action.old_stopped or (
            ensure_running and action.kind in (ActionKind.UPDATE, ActionKind.RECREATE)
        )
        if restart_old:
            try:
                await self.ensure_running(current.id)
            except ContainerNotFoundError:
                log.warning("container %s is gone; it cannot be started again", action.name)
                raise
            action.old_stopped = False
