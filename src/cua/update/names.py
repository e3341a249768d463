"""Names and labels of the containers an operation has in flight.

Docker names are unique, but Kanto keeps the old and the new container of a RECREATE side
by side until CLEANUP. So the new container is created under a temporary name and takes the
real name only when it is activated (in standalone mode: in UPDATE);
the old one is then renamed out of the way until it is removed. The names say which is
which after a crash (labels cannot change after create).
"""

from __future__ import annotations

from collections.abc import Mapping

NEW_SUFFIX = ".cua-new"  # a new container, created in DOWNLOAD, not yet activated
OLD_SUFFIX = ".cua-old"  # an old container, renamed at ACTIVATE, removed at CLEANUP
# An old container that CLEANUP committed to removing, so that recovery finishes the removal
# instead of undoing the update: renamed before the removal when no journal record says so
# (a crash in between), else only when the removal failed (`steps.DeviceSteps.remove_old`).
REMOVED_SUFFIX = ".cua-removed"
_SUFFIXES = (NEW_SUFFIX, OLD_SUFFIX, REMOVED_SUFFIX)

LABEL_ACTIVITY = "io.cua.activity-id"  # the operation that created the container
# On a new container that replaces another: whether that one ran when identified ("true"/
# "false"). Crash recovery uses it to put the old container back as it was.
LABEL_REPLACES_RUNNING = "io.cua.replaces-running"


def new_name(name: str) -> str:
    return name + NEW_SUFFIX


def old_name(name: str) -> str:
    return name + OLD_SUFFIX


def removed_name(name: str) -> str:
    return name + REMOVED_SUFFIX


def is_transient(name: str) -> bool:
    """A name this agent uses for a container in flight (never a desired container's)."""
    return name.endswith(_SUFFIXES)


def real_name(name: str) -> str:
    """The desired container's name behind a transient name."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def operation_labels(activity_id: str, replaces_running: bool | None) -> dict[str, str]:
    """Labels added to a container an operation creates (beside the spec labels)."""
    labels = {LABEL_ACTIVITY: activity_id}
    if replaces_running is not None:
        labels[LABEL_REPLACES_RUNNING] = "true" if replaces_running else "false"
    return labels


def replaced_was_running(labels: Mapping[str, str]) -> bool | None:
    """What `operation_labels` recorded about the replaced container (None: no record)."""
    value = labels.get(LABEL_REPLACES_RUNNING)
    if value is None:
        return None
    return value == "true"
