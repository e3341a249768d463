"""Desired vs current container: which action (spec §3.1, §3.3; Kanto's `containers_compare.go`).

`compare` decides the kind exactly as Kanto does (the first mismatch in Kanto's check order
decides), and also lists every differing field by its Kanto config key, for logs and plans.
Hostname and domain name are not compared (Kanto does not; both are always
`<name>-host`/`<name>-domain` here), nor is the component version (§3.7).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from cua.containers.spec import ContainerSpec, ProcessConfig, Resources, size_text

H = TypeVar("H", bound=Hashable)


class ActionKind(StrEnum):
    CHECK = "CHECK"
    CREATE = "CREATE"
    RECREATE = "RECREATE"
    UPDATE = "UPDATE"
    DESTROY = "DESTROY"


IDENTIFIED_MESSAGES: Mapping[ActionKind, str] = MappingProxyType(
    {
        ActionKind.CHECK: (
            "No changes detected, existing container will be check only if it is running."
        ),
        ActionKind.CREATE: "New container will be created and started.",
        ActionKind.RECREATE: "Existing container will be destroyed and replaced by a new one.",
        ActionKind.UPDATE: "Existing container will be updated with new configuration.",
        ActionKind.DESTROY: "Existing container will be destroyed, no longer needed.",
    }
)
"""The IDENTIFIED feedback message of each kind (§3.1, exact)."""


@dataclass(frozen=True, slots=True)
class Comparison:
    kind: ActionKind
    # Kanto config keys of every differing field, in Kanto's check order; () for CHECK/CREATE.
    differences: tuple[str, ...] = ()


def same_set(first: Sequence[H], second: Sequence[H]) -> bool:
    """Kanto's `compareSliceSet`: equal lengths and each element found in the other.

    Duplicates are not counted: `[x, x, y]` equals `[y, y, x]`, but `[x, x]` differs
    from `[x]` (the lengths differ). Linear (sets), where Kanto's loops are quadratic.
    """
    return len(first) == len(second) and set(first) == set(second)


def _config_differences(current: ProcessConfig | None, desired: ProcessConfig | None) -> list[str]:
    if current is None and desired is None:
        return []
    if current is None or desired is None:
        # One side has no env/cmd block at all: Kanto says they differ, even `{}` vs none.
        present = current or desired
        assert present is not None
        named = [key for key, items in (("env", present.env), ("cmd", present.cmd)) if items]
        return named or ["env", "cmd"]
    result = []
    if not same_set(current.env, desired.env):
        result.append("env")
    # cmd is order-sensitive; two empty lists are equal.
    if (current.cmd or desired.cmd) and current.cmd != desired.cmd:
        result.append("cmd")
    return result


def _resources_differences(current: Resources | None, desired: Resources | None) -> list[str]:
    if current is None and desired is None:
        return []
    mine = current or Resources()
    theirs = desired or Resources()
    result = [
        key
        for key, a, b in (
            ("memory", mine.memory, theirs.memory),
            ("memoryReservation", mine.memory_reservation, theirs.memory_reservation),
            ("memorySwap", mine.memory_swap, theirs.memory_swap),
        )
        if size_text(a) != size_text(b)  # Kanto compares the text: "1G" is not "1024M"
    ]
    if not result and (current is None or desired is None):
        return ["memory"]  # nil vs a present block with all limits empty differs in Kanto
    return result


def _limits_removed(current: Resources | None, desired: Resources | None) -> bool:
    """The desired state drops a memory limit or reservation the container has.

    A runtime update cannot remove one (the engine, like Kanto's container manager, reads an
    empty limit as "unchanged"), so Kanto's UPDATE would leave it and come back forever
    (spec §3.3 quirk, D12). Only a new container drops it: RECREATE (ours)."""
    mine = current or Resources()
    theirs = desired or Resources()
    return bool(
        (mine.memory and not theirs.memory)
        or (mine.memory_reservation and not theirs.memory_reservation)
    )


def compare(desired: ContainerSpec, current: ContainerSpec | None) -> Comparison:
    """The action that takes `current` (None: no such container) to `desired`."""
    if current is None:
        return Comparison(ActionKind.CREATE)
    recreate: list[str] = []
    if current.image != desired.image:
        recreate.append("image")
    if not same_set(current.mounts, desired.mounts):
        recreate.append("mount")
    recreate += _config_differences(current.config, desired.config)
    if current.terminal != desired.terminal:
        recreate.append("terminal")
    if current.interactive != desired.interactive:
        recreate.append("interactive")
    if current.privileged != desired.privileged:
        recreate.append("privileged")
    if current.network != desired.network:
        recreate.append("network")
    if not same_set(current.devices, desired.devices):
        recreate.append("device")
    if not same_set(current.extra_hosts, desired.extra_hosts):
        recreate.append("host")
    if not same_set(current.ports, desired.ports):
        recreate.append("port")
    log_a, log_b = current.log, desired.log
    for key, a, b in (
        ("logDriver", log_a.driver, log_b.driver),
        ("logMaxFiles", log_a.max_files, log_b.max_files),
        ("logMaxSize", size_text(log_a.max_size), size_text(log_b.max_size)),
        ("logPath", log_a.root_dir, log_b.root_dir),
        ("logMode", log_a.mode, log_b.mode),
        ("logMaxBufferSize", size_text(log_a.max_buffer_size), size_text(log_b.max_buffer_size)),
    ):
        if a != b:
            recreate.append(key)

    update = _resources_differences(current.resources, desired.resources)
    restart_a, restart_b = current.restart, desired.restart
    for key, x, y in (
        ("restartPolicy", restart_a.type, restart_b.type),
        ("restartMaxRetries", restart_a.max_retries, restart_b.max_retries),
        ("restartTimeout", restart_a.timeout, restart_b.timeout),
    ):
        if x != y:
            update.append(key)

    if recreate or _limits_removed(current.resources, desired.resources):
        return Comparison(ActionKind.RECREATE, tuple(recreate + update))
    if update:
        return Comparison(ActionKind.UPDATE, tuple(update))
    return Comparison(ActionKind.CHECK)
