"""Crash recovery: put back containers an interrupted operation left in flight.

An operation's containers in flight have transient names (`names`): `<name>.cua-new` is a
new container not yet activated, `<name>.cua-old` an old one renamed at ACTIVATE. The steps
are ordered so that whenever an old container is renamed, its new one still exists, and
the new one's labels say whether the old one ran. So after a crash the device is put back
to its state before the operation: the old container under its real name, running if it
was, and the new one removed.

Not covered (no record survives a crash): containers stopped for DESTROY, and runtime
updates of UPDATE actions; see docs/operations.md.
"""

from __future__ import annotations

import logging

from cua.containers.labels import is_managed
from cua.engine.base import ContainerStatus, ContainerSummary, Engine
from cua.update.names import (
    LABEL_REPLACES_RUNNING,
    NEW_SUFFIX,
    OLD_SUFFIX,
    REMOVED_SUFFIX,
    new_name,
    real_name,
    replaced_was_running,
)

log = logging.getLogger(__name__)


async def recover(engine: Engine) -> list[str]:
    """Put back leftovers of an interrupted operation; returns what was done (for logs).

    Raises EngineError when the engine cannot be used.
    """
    done: list[str] = []
    containers = {c.name: c for c in await engine.list_containers()}
    for name, container in sorted(containers.items()):
        if name.endswith(REMOVED_SUFFIX) and is_managed(container.labels):
            await engine.remove_container(container.id)
            done.append(f"{name}: removal committed by CLEANUP finished")
    names = {real_name(n) for n in containers if n.endswith((NEW_SUFFIX, OLD_SUFFIX))}
    for name in sorted(names):
        await _recover_one(engine, name, containers, done)
    for line in done:
        log.warning("recovery: %s", line)
    return done


async def _recover_one(
    engine: Engine, name: str, containers: dict[str, ContainerSummary], done: list[str]
) -> None:
    new = containers.get(name + NEW_SUFFIX)
    old = containers.get(name + OLD_SUFFIX)
    real = containers.get(name)
    if new is not None and not is_managed(new.labels):
        new = None  # not ours: leave it alone
    if old is not None and real is not None and new is None:
        if is_managed(real.labels) and LABEL_REPLACES_RUNNING in real.labels:
            # Activated but not cleaned up: the new container holds the name; step it aside.
            await engine.rename_container(real.id, new_name(name))
            done.append(f"{name}: new container moved aside")
            new, real = real, None
        else:
            log.warning("recovery: %s and %s both exist; left alone", name, name + OLD_SUFFIX)
            return
    if new is None and (old is None or not is_managed(old.labels)):
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
        if details.state.status is ContainerStatus.PAUSED:
            await engine.unpause_container(real.id)
        elif details.state.status is not ContainerStatus.RUNNING:
            await engine.start_container(real.id)
            done.append(f"{name}: old container started again")
