"""Identification (spec §3.2, §3.5, §3.6): desired + current -> ordered actions. No I/O.

The manager gathers the current containers (one list call, plus inspects where the label
record is missing) into `CurrentContainer`s; everything else is decided here, so the rules
are tested without an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cua.containers.compare import IDENTIFIED_MESSAGES, ActionKind, compare
from cua.containers.errors import DesiredStateError
from cua.containers.parse import ParsedComponent, ParsedDesiredState, quote
from cua.containers.spec import ContainerSpec
from cua.containers.state import ContainerStatus
from cua.settings import Manage
from cua.update.names import is_transient

REMOVE_COMPONENTS = "remove-components"


class PlanError(DesiredStateError):
    """The desired state cannot be applied to this device. `str()` is the feedback text."""


@dataclass(frozen=True, slots=True)
class CurrentContainer:
    """A container on the engine, as identification needs it.

    `spec` is what the desired spec is compared with: for a container this agent created,
    the spec its labels recorded (so engine-filled values never cause an UPDATE, D12); for
    another one (manage: all), the spec the engine reports. None when no comparison is
    needed (a container that can only be destroyed or left alone).
    """

    id: str
    name: str
    image: str  # as the desired state gave it (labels), else as the engine reports it
    version: str  # derived from `image` (spec §5.3)
    status: ContainerStatus
    managed: bool  # owned by this agent's domain
    spec: ContainerSpec | None = None
    owner: str | None = None  # the domain that owns it (labels); None: no agent owns it

    @property
    def running(self) -> bool:
        return self.status in (ContainerStatus.RUNNING, ContainerStatus.PAUSED)


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One action of an operation: what to do to one container, and why."""

    kind: ActionKind
    name: str  # the container name (= component id)
    component_id: str  # `<domain>:<name>`
    version: str
    desired: ParsedComponent | None  # None for DESTROY
    current: CurrentContainer | None  # None for CREATE
    differences: tuple[str, ...] = ()  # RECREATE/UPDATE: the fields that differ

    @property
    def message(self) -> str:
        """The IDENTIFIED feedback message of this kind (§3.1)."""
        return IDENTIFIED_MESSAGES[self.kind]


@dataclass(frozen=True, slots=True)
class Plan:
    """All actions (desired order, then DESTROY by name) and the baseline sets (§3.5)."""

    actions: tuple[PlannedAction, ...]
    # title -> indexes into `actions`, in action order; includes the implicit baselines.
    baselines: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    system_containers: tuple[str, ...] = ()


def effective_system_containers(
    parsed: ParsedDesiredState, configured: Sequence[str]
) -> tuple[str, ...]:
    """The desired state's `systemContainers` replaces the configured list (§3.6)."""
    if parsed.system_containers is not None:
        return tuple(parsed.system_containers)
    return tuple(configured)


def make_plan(
    parsed: ParsedDesiredState,
    current: Sequence[CurrentContainer],
    *,
    domain: str,
    manage: Manage,
    system_containers: Sequence[str],
) -> Plan:
    """Kanto's `Identify`, with our ownership rule. Raises PlanError.

    In `labelled` mode only this domain's containers are compared or destroyed, and a
    desired name held by another domain's or an unmanaged container is an error naming the
    owner (no silent takeover). In `all` mode every non-system container is ours, as in Kanto.
    """
    system = set(effective_system_containers(parsed, system_containers))
    by_name: dict[str, CurrentContainer] = {}
    for container in current:
        if is_transient(container.name):
            continue  # an operation's container in flight, never a desired one
        by_name[container.name] = container  # the last listed wins (Kanto, D11)

    actions: list[PlannedAction] = []
    for desired in parsed.containers:
        if is_transient(desired.id):
            raise PlanError(
                f"invalid container name {desired.id}: names ending in "
                "'.cua-new', '.cua-old' or '.cua-removed' are reserved by the agent"
            )
        if desired.id in system:
            continue  # never created, changed or destroyed (the DESTROY filter skips it too)
        existing = by_name.pop(desired.id, None)
        if existing is not None and not existing.managed and manage is Manage.LABELLED:
            raise PlanError(_taken_message(desired.id, existing.owner))
        comparison = compare(desired.spec, None if existing is None else existing.spec)
        actions.append(
            PlannedAction(
                kind=comparison.kind,
                name=desired.id,
                component_id=f"{domain}:{desired.id}",
                version=desired.version,
                desired=desired,
                current=existing,
                differences=tuple(str(d) for d in comparison.differences),
            )
        )

    destroy = sorted(
        (
            c
            for c in by_name.values()
            if c.name not in system and (c.managed or manage is Manage.ALL)
        ),
        key=lambda c: c.name,
    )  # sorted by name, not map order (D13)
    actions.extend(
        PlannedAction(
            kind=ActionKind.DESTROY,
            name=c.name,
            component_id=f"{domain}:{c.name}",
            version=c.version,
            desired=None,
            current=c,
        )
        for c in destroy
    )
    return Plan(
        actions=tuple(actions),
        baselines=_baselines(parsed, actions, domain),
        warnings=tuple(parsed.warnings),
        system_containers=tuple(sorted(system)),
    )


def _taken_message(name: str, owner: str | None) -> str:
    if owner is None:
        held = "exists and is not managed by this agent nor by any other update agent"
    else:
        held = f"belongs to the update agent of domain {quote(owner)}"
    return f"cannot update container {name}: a container with this name {held} (manage: labelled)"


def _baselines(
    parsed: ParsedDesiredState, actions: Sequence[PlannedAction], domain: str
) -> dict[str, tuple[int, ...]]:
    """Named baselines, implicit `<domain>:<name>` ones, and `<domain>:remove-components`."""
    index = {a.name: i for i, a in enumerate(actions) if a.kind is not ActionKind.DESTROY}
    result: dict[str, tuple[int, ...]] = {}
    listed: set[str] = set()
    for baseline in parsed.baselines:
        members = {index[name] for name in baseline.components if name in index}
        listed.update(baseline.components)
        result[baseline.title] = tuple(sorted(members))
    for desired in parsed.containers:
        if desired.id not in listed:
            single = (index[desired.id],) if desired.id in index else ()
            result[f"{domain}:{desired.id}"] = single
    result[f"{domain}:{REMOVE_COMPONENTS}"] = tuple(
        i for i, a in enumerate(actions) if a.kind is ActionKind.DESTROY
    )
    return result
