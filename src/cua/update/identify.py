"""What identification reads from the engine: the current containers (spec §3.2 step 1).

One list call, plus one inspect for each desired name held by a container (done
concurrently): for our containers the labels hold the spec they were created from (D12),
but a runtime UPDATE changes restart policy and limits without changing labels, so those
are taken from the engine when they differ from the record.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

from cua.containers.gosyntax import Size, SizeError
from cua.containers.inventory import image_version
from cua.containers.labels import LabelledSpec, decode_labels, is_managed
from cua.containers.spec import ContainerSpec, Resources, RestartPolicy, RestartPolicyType
from cua.containers.state import ContainerSummary
from cua.engine.base import ContainerNotFoundError, Engine
from cua.settings import Manage
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


async def current_containers(
    engine: Engine, desired_names: Collection[str], manage: Manage
) -> list[CurrentContainer]:
    """The engine's containers as identification needs them. Raises EngineError."""
    summaries = await engine.list_containers()

    async def one(summary: ContainerSummary) -> CurrentContainer | None:
        return await _current(engine, summary, desired_names, manage)

    return [c for c in await map_concurrently(summaries, one) if c is not None]


async def _current(
    engine: Engine, summary: ContainerSummary, desired_names: Collection[str], manage: Manage
) -> CurrentContainer | None:
    labelled = decode_labels(summary.labels)
    managed = labelled is not None or is_managed(summary.labels)
    image = labelled.image_as_given if labelled is not None else summary.image
    spec: ContainerSpec | None = None
    compared = summary.name in desired_names and not is_transient(summary.name)
    if compared and (managed or manage is Manage.ALL):
        try:
            details = await engine.inspect_container(summary.id)
        except ContainerNotFoundError:
            return None  # removed since it was listed
        spec = effective_spec(labelled, details.spec)
    return CurrentContainer(
        id=summary.id,
        name=summary.name,
        image=image,
        version=image_version(image),
        status=summary.status,
        managed=managed,
        spec=spec,
    )


def effective_spec(labelled: LabelledSpec | None, engine: ContainerSpec) -> ContainerSpec:
    """What a container stands for (compared at identification, shown in the inventory):
    for ours, the spec its labels recorded (D12) with the values a runtime UPDATE changed;
    for another one, the spec the engine reports."""
    normalized = normalize_engine_spec(engine)
    return normalized if labelled is None else with_runtime(labelled.spec, normalized)


def _bytes(size: str) -> int | None:
    """A spec's size as the engine counts it (0: not set, -1: unlimited); None if unreadable."""
    try:
        return Size.parse(size, allow_unlimited=True).engine_bytes if size else 0
    except SizeError:
        return None


def normalize_engine_spec(spec: ContainerSpec) -> ContainerSpec:
    """The engine fills swap = 2 x memory when none was given (as CM does, §3.3); a spec
    read back from the engine says "" there, so that this default is not a difference."""
    resources = spec.resources
    if resources is None or not resources.memory or not resources.memory_swap:
        return spec
    swap, memory = _bytes(resources.memory_swap), _bytes(resources.memory)
    if swap is not None and memory is not None and swap == 2 * memory:
        resources = dataclasses.replace(resources, memory_swap="")
        if resources == Resources():
            return dataclasses.replace(spec, resources=None)
        return dataclasses.replace(spec, resources=resources)
    return spec


def _same_restart(recorded: RestartPolicy, engine: RestartPolicy) -> bool:
    if recorded.type is not engine.type:
        return False
    return recorded.type is not RestartPolicyType.ON_FAILURE or (
        recorded.max_retries == engine.max_retries
    )


def _swap_bytes(resources: Resources) -> int | None:
    """Swap in bytes; "" with a memory limit is the engine's default, 2 x memory (a spec
    read back from the engine says "" for it: `normalize_engine_spec`)."""
    if not resources.memory_swap and resources.memory:
        memory = _bytes(resources.memory)
        return None if memory is None else 2 * memory
    return _bytes(resources.memory_swap)


def _same_resources(recorded: Resources | None, engine: Resources | None) -> bool:
    mine, theirs = recorded or Resources(), engine or Resources()
    return (
        _bytes(mine.memory) == _bytes(theirs.memory)
        and _bytes(mine.memory_reservation) == _bytes(theirs.memory_reservation)
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
