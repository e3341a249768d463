"""Crash recovery: put back containers an interrupted operation left in flight.

An operation's containers in flight have transient names (`names`): `<name>.cua-new` is a
new container not yet activated, `<name>.cua-old` an old one renamed at ACTIVATE. The steps
are ordered so that whenever an old container is renamed, its new one still exists, and
the new one's labels say whether the old one ran. So after a crash the device is put back
to its state before the operation: the old container under its real name, running if it
was, and the new one removed.

What names and labels cannot show is in the operation's journal (`journal`), read in three
steps: removals that CLEANUP committed to are finished first (as `.cua-removed` ones); then
the names and labels are put back as above; then, newest first, every change of the
journal that CLEANUP did not commit is undone: a new container still there is removed, the
previous restart policy and limits are applied again, a container the operation stopped is
started again if it still exists under its name. Records of an activity that `finished` are
not undone (its changes are final, or were undone by the operation). Then the journal is
left holding only the final statuses the restart owes (`owed_final_statuses`), which the
update manager publishes; each goes once the broker acknowledged it. A container
that is gone or cannot be changed (e.g. it fails to start) is logged and skipped, by name
as from the journal; only an engine that cannot be reached stops recovery (the journal is
then kept for the next try).

The engine may still be doing what the dead agent asked (our-behaviour "After a crash"): a
stop of a container that ignores SIGTERM takes the whole grace period, and dockerd carries
it out after the agent died. Such a container still looks running, then exits. So a
container the journal says the operation stopped (or was about to stop) and that looks
running is stopped again by recovery, which waits for the stop in flight to end, and then
started: it ends running whatever the engine was doing.

Only containers whose labels name this agent's domain (by their transient names) and the
ids the journal recorded are touched: another domain's operation in flight is not ours.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from cua.containers.labels import LEGACY_DOMAIN, label_domain
from cua.containers.state import ContainerDetails, ContainerStatus, ContainerSummary
from cua.engine.base import ContainerNotFoundError, Engine, EngineError, EngineUnavailableError
from cua.update.journal import Entry, Journal, Step
from cua.update.names import (
    LABEL_REPLACES_RUNNING,
    NEW_SUFFIX,
    OLD_SUFFIX,
    REMOVED_SUFFIX,
    new_name,
    real_name,
    replaced_was_running,
)
from cua.update.steps import start_unless_running

log = logging.getLogger(__name__)


def interrupted_activities(entries: list[Entry]) -> list[str]:
    """The activities the journal records (normally one) that did not finish, in order."""
    finished = {e.activity for e in entries if e.step is Step.FINISHED}
    return [a for a in dict.fromkeys(e.activity for e in entries) if a not in finished]


def owed_final_statuses(entries: list[Entry], done: list[str]) -> list[Entry]:
    """After recovery, as `finished` records: the final statuses a restart publishes. A
    finished activity's own (the broker may not have it: at least once), and INCOMPLETE,
    saying what recovery `done`, for an interrupted one not answered yet."""
    owed: dict[str, Entry] = {}
    for entry in entries:
        if entry.step is Step.FINISHED:
            owed.setdefault(entry.activity, entry)
    answered = {e.activity for e in entries if e.step is Step.ENDED}
    message = interrupted_message(done)
    for activity in interrupted_activities(entries):
        if activity not in answered:
            owed[activity] = Entry(
                activity,
                Step.FINISHED,
                "",
                "",
                status="INCOMPLETE",
                message=message,
                interrupted=True,
            )
    order = list(dict.fromkeys(e.activity for e in entries))
    return sorted(owed.values(), key=lambda e: order.index(e.activity))


def interrupted_message(done: list[str]) -> str:
    """The final status message of an operation a restart interrupted, and the answer to
    its later commands: what recovery did to put the device back."""
    if not done:
        return "the agent restarted during this operation; there was nothing to restore"
    return "the agent restarted during this operation; recovery did: " + "; ".join(done)


async def recover(
    engine: Engine,
    journal: Journal | None = None,
    *,
    domain: str = LEGACY_DOMAIN,
    grace_period: float = 30.0,
) -> list[str]:
    """Put back leftovers of an interrupted operation of `domain`; returns what was done.

    `grace_period`: the agent's stop timeout (a stop in flight is waited for with it).
    Raises EngineError when the engine cannot be used (the journal is then kept).
    """
    done: list[str] = []
    journaled = journal.read() if journal is not None else []
    finished = {e.activity for e in journaled if e.step is Step.FINISHED}
    entries = [e for e in journaled if e.activity not in finished]
    if entries:
        log.warning("recovery: %d journal record(s) of an interrupted operation", len(entries))
    committed = {e.id: e for e in entries if e.step is Step.COMMITTED}
    for entry in committed.values():
        if entry.remove:
            await _journal_step(engine, entry, _finish_removal, done)
    containers = {
        c.name: c for c in await engine.list_containers() if label_domain(c.labels) == domain
    }
    started: set[str] = set()  # ids started here: their stop in flight (if any) had ended
    for name, container in sorted(containers.items()):
        if name.endswith(REMOVED_SUFFIX):
            async with _skipped_on_error(name):
                await engine.remove_container(container.id)
                done.append(f"{name}: removal committed by CLEANUP finished")
    names = {real_name(n) for n in containers if n.endswith((NEW_SUFFIX, OLD_SUFFIX))}
    for name in sorted(names):
        async with _skipped_on_error(name):
            await _recover_one(engine, name, containers, done, started)
    for entry in reversed(entries):
        if entry.step is Step.STOPPED and entry.id not in committed:
            if entry.id not in started:
                await _journal_step(engine, entry, _settle_and_start(grace_period), done)
        elif entry.step in _UNDO and entry.id not in committed:
            await _journal_step(engine, entry, _UNDO[entry.step], done)
    for line in done:
        log.warning("recovery: %s", line)
    if journal is not None:
        journal.replace(owed_final_statuses(journaled, done))
    return done


@contextlib.asynccontextmanager
async def _skipped_on_error(name: str) -> AsyncIterator[None]:
    """One container's recovery failed (e.g. it cannot start): logged, the others go on.
    An engine that cannot be reached stops recovery (EngineUnavailableError raised)."""
    try:
        yield
    except EngineUnavailableError:
        raise
    except EngineError as error:
        log.error("recovery: %s: %s", name, error)


_Undo = Callable[[Engine, Entry, ContainerDetails], Awaitable[str | None]]


async def _journal_step(engine: Engine, entry: Entry, undo: _Undo, done: list[str]) -> None:
    """One journal record: skipped (logged) if its container is gone or cannot be changed."""
    async with _skipped_on_error(f"{entry.name} ({entry.step} record)"):
        try:
            details = await engine.inspect_container(entry.id)
        except ContainerNotFoundError:
            log.info("recovery: %s (%s record): the container is gone", entry.name, entry.step)
            return
        line = await undo(engine, entry, details)
        if line is not None:
            done.append(f"{entry.name}: {line}")


async def _finish_removal(engine: Engine, entry: Entry, details: ContainerDetails) -> str:
    await engine.remove_container(entry.id)
    return "removal committed by CLEANUP finished"


async def _remove_created(engine: Engine, entry: Entry, details: ContainerDetails) -> str:
    await engine.remove_container(entry.id)
    return f"new container of unfinished operation {entry.activity} removed"


async def _restore_runtime(engine: Engine, entry: Entry, details: ContainerDetails) -> str:
    assert entry.restart is not None
    await engine.update_container(entry.id, entry.restart, entry.resources)
    return "previous restart policy and memory limits restored"


def _settle_and_start(grace_period: float) -> _Undo:
    """Undo of a STOPPED record: the container ends running, even when the stop the dead
    agent asked for is still being carried out by the engine (it looks running)."""

    async def undo(engine: Engine, entry: Entry, details: ContainerDetails) -> str | None:
        if details.name != entry.name:
            log.warning(
                "recovery: %s was stopped by the operation but is now named %s; left alone",
                entry.name,
                details.name,
            )
            return None
        status = details.state.status
        if status in (ContainerStatus.RUNNING, ContainerStatus.PAUSED):
            # A stop may be in flight in the engine: stopping again waits for it to end
            # (a container that was not being stopped is restarted: it ends running too).
            await engine.stop_container(entry.id, grace_period)
            await engine.start_container(entry.id)
            return "container the operation was stopping stopped and started again"
        await engine.start_container(entry.id)  # neither running nor paused: a plain start
        return "container stopped by the operation started again"

    return undo


_UNDO: dict[Step, _Undo] = {
    Step.CREATED: _remove_created,
    Step.UPDATED: _restore_runtime,
}


async def _recover_one(
    engine: Engine,
    name: str,
    containers: dict[str, ContainerSummary],
    done: list[str],
    started: set[str],
) -> None:
    """`containers`: this domain's, by name (another's are never touched)."""
    new = containers.get(name + NEW_SUFFIX)
    old = containers.get(name + OLD_SUFFIX)
    real = containers.get(name)
    if old is not None and real is not None and new is None:
        if LABEL_REPLACES_RUNNING in real.labels:
            # Activated but not cleaned up: the new container holds the name; step it aside.
            await engine.rename_container(real.id, new_name(name))
            done.append(f"{name}: new container moved aside")
            new, real = real, None
        else:
            log.warning("recovery: %s and %s both exist; left alone", name, name + OLD_SUFFIX)
            return
    if new is None and old is None:
        return  # nothing of an operation of ours: leave it alone
    was_running = replaced_was_running(new.labels) if new is not None else None
    if old is not None and real is None:
        await engine.rename_container(old.id, name)
        done.append(f"{name}: old container renamed back")
        real = old
    if new is not None:
        await engine.remove_container(new.id)
        done.append(f"{name}: new container of an unfinished operation removed")
    if real is not None and was_running:
        details = await engine.inspect_container(real.id)
        if await start_unless_running(engine, real.id, details.state.status):
            started.add(real.id)
            done.append(f"{name}: old container started again")
