"""A bind mount whose host path does not exist, said so that an operator can act on it.

Kanto's container manager creates containers with bind mounts; Docker refuses one whose
source is missing on the host (`bind source path does not exist: <path>`). That raw engine
text names neither the component nor what to do: `missing_source_message` turns it into
one that does (our wording; the failure itself is the engine's, as in Kanto).
"""

from __future__ import annotations

import re

from cua.containers.spec import ContainerSpec

__all__ = ["missing_source_message"]

_MISSING_SOURCE = re.compile(r"bind source path does not exist: (?P<path>\S+)")


def missing_source_message(component: str, spec: ContainerSpec, engine_text: str) -> str | None:
    """The message for an engine error about a missing bind-mount source, else None."""
    match = _MISSING_SOURCE.search(engine_text)
    if match is None:
        return None
    path = match.group("path")
    destination = next((m.destination for m in spec.mounts if m.source == path), None)
    target = f" (mounted at {destination})" if destination else ""
    return (
        f"cannot create container {component}: the host path {path} of its mount{target} "
        "does not exist on the device; create that file or directory on the device "
        "(see the component's prerequisites), or change the mount in the desired state"
    )
