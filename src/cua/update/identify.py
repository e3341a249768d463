"""What identification reads from the engine: the current containers (spec §3.2 step 1).

One list call, plus one inspect for each desired name held by a container, and (manage:
labelled) for each container whose labels name this agent's domain (done concurrently):
for our containers the labels hold the spec they were created from (D12), but a runtime
UPDATE changes restart policy and limits without changing labels, so those are taken from
the engine when they differ from the record.

Ownership is per domain (our-behaviour "Containers that the agent owns"): the owner is the
domain the container's labels name, unless those labels are its image's own (`owner`). The
inspect is what shows the image's labels; a container whose labels name another domain, or
none, is never inspected unless it holds a desired name (to name its owner).

`Settled` remembers the containers whose inspect showed what the listing cannot: that
their labels are their own, not their image's (so their owner is the domain the labels
name; labels never change), and that their restart policy and limits were as those labels
record them. While this agent does not change one (an operation with a non-CHECK action
on it unsettles it), the listing is all there is to read: a no-op needs the listing alone,
and the labels of a settled container are decoded once (it is forgotten once a listing no
longer shows it). A `docker update` made behind
the agent's back is seen at the agent's next start (Kanto's container manager does not see
one either).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import TypeVar

from cua.containers.inventory import InventoryContainer, image_version
from cua.containers.labels import LabelledSpec, decode_labels, label_domain, owner
from cua.containers.spec import (
    ContainerSpec,
    Resources,
    RestartPolicy,
    RestartPolicyType,
    engine_bytes,
)
from cua.containers.state import ContainerDetails, ContainerSummary
from cua.engine.base import ContainerNotFoundError, Engine
from cua.settings import Manage, UpdateSettings
from cua.update.names import is_transient
from cua.update.plan import CurrentContainer

READ_CONCURRENCY = 16  # engine reads in flight at once (identification, inventory)

_T = TypeVar("_T")
_R = TypeVar("_R")


async def map_concurrently(
    items: Sequence[_T], read: Callable[[_T], Awaitable[_R]], limit: int = READ_CONCURRENCY
) -> list[_R]:
    """`read` of every item, in order, at most `limit` in flight: a few workers rather than
    a task per item (1,000 containers would be 1,000 tasks and as many connections)."""
    results: list[_R | None] = [None] * len(items)
    pending = iter(enumerate(items))  # shared by the workers

    async def worker() -> None:
        for index, item in pending:
            results[index] = await read(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(limit, len(items))):
            group.create_task(worker())
    return results  # type: ignore[return-value]  # every slot was filled


class Settled:
    """Containers whose inspect need not be repeated (owned by the domain their labels
    name, as created): container id -> its decoded labels (a container's labels never
    change; decoding them is most of the cost of reading a listed container of ours)."""

    def __init__(self) -> None:
        self._labelled: dict[str, LabelledSpec] = {}

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._labelled

    def labelled(self, container_id: str) -> LabelledSpec:
        """Its labels as decoded when it was settled."""
        return self._labelled[container_id]

    def add(self, container_id: str, labelled: LabelledSpec) -> None:
        self._labelled[container_id] = labelled

    def keep_only(self, container_ids: Collection[str]) -> None:
        """Forget the containers that are gone (not in the latest listing)."""
        for gone in [c for c in self._labelled if c not in container_ids]:
            del self._labelled[gone]

    def discard(self, container_ids: Iterable[str]) -> None:
        """These may be changed (an operation's actions): inspect them again."""
        for container_id in container_ids:
            self._labelled.pop(container_id, None)


async def current_containers(
    engine: Engine,
    desired_names: Collection[str],
    manage: Manage,
    domain: str,
    settled: Settled | None = None,
) -> list[CurrentContainer]:
    """The engine's containers as identification needs them. Raises EngineError."""
    summaries = await engine.list_containers()
    if settled is not None:
        settled.keep_only({summary.id for summary in summaries})

    async def one(summary: ContainerSummary) -> CurrentContainer | None:
        return await _current(engine, summary, desired_names, manage, domain, settled=settled)

    return [c for c in await map_concurrently(summaries, one) if c is not None]


async def _current(
    engine: Engine,
    summary: ContainerSummary,
    desired_names: Collection[str],
    manage: Manage,
    domain: str,
    *,
    settled: Settled | None,
) -> CurrentContainer | None:
    claimed = label_domain(summary.labels)
    desired = summary.name in desired_names and not is_transient(summary.name)
    if manage is Manage.ALL:
        inspect = desired
    else:  # the owner of a desired name, and whether our domain's labels are the image's
        inspect = claimed is not None and (desired or claimed == domain)
    known = settled is not None and summary.id in settled
    details = None
    if inspect and not known:
        try:
            details = await engine.inspect_container(summary.id)
        except ContainerNotFoundError:
            return None  # removed since it was listed
    # Not inspected: settled (its labels are its own), or not needed (owned by no one or
    # by another domain, as far as this agent cares).
    owned_by = claimed if details is None else owner(details.labels, details.image_labels)
    labelled: LabelledSpec | None
    if known and settled is not None:
        labelled = settled.labelled(summary.id)
    else:
        labelled = decode_labels(summary.labels) if owned_by is not None else None
    image = labelled.image_as_given if labelled is not None else summary.image
    spec: ContainerSpec | None = None
    managed = owned_by == domain
    engine_spec = None if details is None else effective_spec(labelled, details.spec)
    if desired and (managed or manage is Manage.ALL):
        if engine_spec is not None:
            spec = engine_spec
        elif labelled is not None:  # not inspected, so settled: as created
            spec = labelled.spec
    if settled is not None and labelled is not None and engine_spec == labelled.spec:
        settled.add(summary.id, labelled)
    return CurrentContainer(
        id=summary.id,
        name=summary.name,
        image=image,
        version=image_version(image),
        status=summary.status,
        managed=managed,
        spec=spec,
        owner=owned_by,
    )


# --- the current state (inventory): what is reported ----------------------------------------


def reported(summary: ContainerSummary, settings: UpdateSettings) -> bool:
    """Whether the current state may show this listed container (the inspect decides for
    ours: `inventory_entry`). manage: labelled reports this domain's containers and the
    configured system containers only: the others' env may hold secrets. manage: all
    reports every one, as Kanto. An operation's container in flight (a new one not yet
    activated, an old one renamed aside until CLEANUP) is not one of the device's: each
    component is shown once, under its real name."""
    claimed = label_domain(summary.labels)
    if is_transient(summary.name) and claimed is not None:
        return False
    if settings.manage is Manage.ALL:
        return True
    return claimed == settings.domain or summary.name in settings.system_containers


def inventory_entry(
    details: ContainerDetails, settings: UpdateSettings
) -> InventoryContainer | None:
    """How a container is reported (`reported` first); None: not reported after all (its
    labels name our domain but are its image's own)."""
    owned_by = owner(details.labels, details.image_labels)
    labelled = decode_labels(details.labels) if owned_by is not None else None
    details = dataclasses.replace(details, spec=effective_spec(labelled, details.spec))
    if settings.manage is Manage.LABELLED and owned_by != settings.domain:
        if details.name not in settings.system_containers:
            return None
        return InventoryContainer(details=details, managed=False)
    if labelled is None:
        return InventoryContainer(details=details, managed=owned_by == settings.domain)
    return InventoryContainer(details=details, image=labelled.image_as_given)


def effective_spec(labelled: LabelledSpec | None, engine: ContainerSpec) -> ContainerSpec:
    """What a container stands for (compared at identification, shown in the inventory):
    for ours, the spec its labels recorded (D12) with the values a runtime UPDATE changed;
    for another one, the spec the engine reports."""
    normalized = normalize_engine_spec(engine)
    return normalized if labelled is None else with_runtime(labelled.spec, normalized)


def normalize_engine_spec(spec: ContainerSpec) -> ContainerSpec:
    """The engine fills swap = 2 x memory when none was given (as CM does, §3.3); a spec
    read back from the engine says "not set" there, so that this default is not a difference."""
    resources = spec.resources
    if resources is None or resources.memory is None or resources.memory_swap is None:
        return spec
    if resources.memory_swap.engine_bytes == 2 * resources.memory.engine_bytes:
        return dataclasses.replace(spec, resources=dataclasses.replace(resources, memory_swap=None))
    return spec


def _same_restart(recorded: RestartPolicy, engine: RestartPolicy) -> bool:
    if recorded.type is not engine.type:
        return False
    return recorded.type is not RestartPolicyType.ON_FAILURE or (
        recorded.max_retries == engine.max_retries
    )


def _swap_bytes(resources: Resources) -> int:
    """Swap in bytes; not set with a memory limit is the engine's default, 2 x memory (a
    spec read back from the engine does not set it: `normalize_engine_spec`)."""
    if resources.memory_swap is None and resources.memory is not None:
        return 2 * resources.memory.engine_bytes
    return engine_bytes(resources.memory_swap)


def _same_resources(recorded: Resources | None, engine: Resources | None) -> bool:
    mine, theirs = recorded or Resources(), engine or Resources()
    return (
        engine_bytes(mine.memory) == engine_bytes(theirs.memory)
        and engine_bytes(mine.memory_reservation) == engine_bytes(theirs.memory_reservation)
        and _swap_bytes(mine) == _swap_bytes(theirs)
    )


def with_runtime(recorded: ContainerSpec, engine: ContainerSpec) -> ContainerSpec:
    """The recorded spec, with restart policy and limits from the engine where a runtime
    update changed them (labels cannot change after create)."""
    spec = recorded
    if not _same_restart(recorded.restart, engine.restart):
        timeout = recorded.restart.timeout if engine.restart.type is recorded.restart.type else 0
        spec = dataclasses.replace(
            spec, restart=dataclasses.replace(engine.restart, timeout=timeout)
        )
    if not _same_resources(recorded.resources, engine.resources):
        spec = dataclasses.replace(spec, resources=engine.resources)
    return spec
