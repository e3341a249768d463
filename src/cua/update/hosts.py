"""Extra hosts `<name>:container_<hostname>`, resolved when the container starts.

Kanto's container management resolves `container_<hostname>` to the address of the container
whose hostname is `<hostname>` each time the dependant starts (spec §4, key `host`). Docker
fixes a container's extra hosts when it is created, and the agent creates new containers
during DOWNLOAD, before any of them runs. So:

* at create, such an entry is resolved against the containers running then (or left out);
* when the agent starts the container (ACTIVATE), after the containers it names that this
  update starts are up, the entries are resolved again; if the result differs from what the
  container was created with, the not yet started container is created again with the new
  entries (same name, spec and labels) before it starts;
* beyond Kanto: a running container named in the desired state whose entries no longer
  match (its target was re-created and has a new address) is replaced during ACTIVATE by an
  identical container with the current entries, undone like a RECREATE if the update fails;
* a target that is not running (or has no address) leaves the entry out, with a warning in
  the action's feedback message and the log, and the container still starts (Kanto).

`host_ip` (the host's address on the container network) and `host_ip_<ifname>` are left to
the engine adapter, which maps them at create (they do not depend on other containers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cua.containers.state import ContainerStatus
from cua.engine.base import ContainerNotFoundError, Engine

__all__ = [
    "HostResolution",
    "addresses_of",
    "container_entries",
    "container_targets",
    "resolve_hosts",
]

CONTAINER_PREFIX = "container_"


def container_targets(extra_hosts: Iterable[str]) -> tuple[str, ...]:
    """The hostnames that `container_<hostname>` entries name, in order."""
    targets = []
    for entry in extra_hosts:
        _name, sep, value = entry.partition(":")
        if sep and value.startswith(CONTAINER_PREFIX):
            targets.append(value.removeprefix(CONTAINER_PREFIX))
    return tuple(targets)


def container_entries(desired: Iterable[str], entries: Iterable[str]) -> frozenset[str]:
    """Those of `entries` (resolved, or as the engine holds them) whose name is the name
    of a `container_<hostname>` entry of `desired`: the entries that depend on others."""
    names = set()
    for entry in desired:
        name, sep, value = entry.partition(":")
        if sep and value.startswith(CONTAINER_PREFIX):
            names.add(name)
    return frozenset(e for e in entries if e.partition(":")[0] in names)


@dataclass(frozen=True, slots=True)
class HostResolution:
    """The extra hosts to create a container with, and what was left out and why."""

    extra_hosts: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def resolve_hosts(extra_hosts: Sequence[str], addresses: Mapping[str, str]) -> HostResolution:
    """Each `name:container_<hostname>` -> `name:<address>` from `addresses` (hostname ->
    address; missing or "": left out, with a warning); every other entry as it is."""
    resolved: list[str] = []
    warnings: list[str] = []
    for entry in extra_hosts:
        name, sep, value = entry.partition(":")
        if not (sep and value.startswith(CONTAINER_PREFIX)):
            resolved.append(entry)
            continue
        hostname = value.removeprefix(CONTAINER_PREFIX)
        address = addresses.get(hostname, "")
        if address:
            resolved.append(f"{name}:{address}")
        else:
            warnings.append(
                f"extra host {name} left out: no running container has hostname {hostname}"
            )
    return HostResolution(tuple(resolved), tuple(warnings))


async def _address_if(engine: Engine, container: str, hostname: str) -> str:
    try:
        details = await engine.inspect_container(container)
    except ContainerNotFoundError:
        return ""
    if details.state.status is not ContainerStatus.RUNNING:
        return ""
    return details.address if details.spec.host_name == hostname else ""


async def addresses_of(engine: Engine, hostnames: Iterable[str]) -> dict[str, str]:
    """hostname -> address of the running container with that hostname ("" if none).

    The agent names its containers' hosts `<name>-host` (Kanto; not settable), so the
    container `<name>` is asked first (one engine call); only if it is not the one, every
    running container is looked at."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for hostname in dict.fromkeys(hostnames):
        address = await _address_if(engine, hostname.removesuffix("-host"), hostname)
        if address:
            found[hostname] = address
        else:
            missing.append(hostname)
    if missing:
        running = [
            c.id for c in await engine.list_containers() if c.status is ContainerStatus.RUNNING
        ]
        for hostname in missing:
            for container in running:
                address = await _address_if(engine, container, hostname)
                if address:
                    found[hostname] = address
                    break
    return {hostname: found.get(hostname, "") for hostname in dict.fromkeys(hostnames)}
