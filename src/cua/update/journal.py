"""The write-ahead journal of the running operation, in the agent's state directory.

Names and labels tell recovery which containers a RECREATE had in flight, but some changes
leave no trace on the containers: a container stopped for DESTROY, a runtime update of an
UPDATE action (its previous restart policy and limits), a CREATE's container that already
took its real name. Before each such engine change the operation appends one record here
(JSON lines, fsync'd), so that after a crash `recovery` can put the device back as it was
before the operation. When CLEANUP commits an activated baseline, `committed` records say
which containers are final (and which removals recovery must finish). The file is removed
when the operation ends (COMPLETED, INCOMPLETE, SUPERSEDED); an operation interrupted by a
crash or by the agent stopping keeps it for the next start.

Only container ids, names, restart policies and memory values are written: never env
values or any other part of a desired state. A torn last line (crash while writing) is
ignored on reading.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cua.containers.spec import Resources, RestartPolicy, RestartPolicyType

log = logging.getLogger(__name__)

VERSION = 1


class JournalError(Exception):
    """A record cannot be written: the change it announces must not be made."""


class Step(StrEnum):
    STARTED = "started"  # identification began: a restart owes this activity an answer
    ENDED = "ended"  # the activity got its final status (an orchestrated one may be pending)
    STOPPED = "stopped"  # about to stop a running (or paused) container
    UPDATED = "updated"  # about to update restart policy/limits; carries the previous ones
    CREATED = "created"  # a new container exists (before it can take the real name)
    COMMITTED = "committed"  # CLEANUP after activation: the change is final


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal record."""

    activity: str
    step: Step
    id: str
    name: str
    restart: RestartPolicy | None = None  # UPDATED: the previous values
    resources: Resources | None = None
    remove: bool = False  # COMMITTED: CLEANUP removes this container

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": VERSION,
            "activity": self.activity,
            "step": self.step.value,
            "id": self.id,
            "name": self.name,
        }
        if self.step is Step.UPDATED:
            assert self.restart is not None
            data["restart"] = {
                "type": self.restart.type.value,
                "max_retries": self.restart.max_retries,
                "timeout": self.restart.timeout,
            }
            data["resources"] = (
                None
                if self.resources is None
                else {
                    "memory": self.resources.memory,
                    "memory_reservation": self.resources.memory_reservation,
                    "memory_swap": self.resources.memory_swap,
                }
            )
        if self.step is Step.COMMITTED:
            data["remove"] = self.remove
        return data

    @staticmethod
    def from_json(data: Any) -> Entry:
        """Raises ValueError (or KeyError, TypeError) for a record that is not ours."""
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise ValueError("not a version 1 record")
        step = Step(data["step"])
        restart = resources = None
        if step is Step.UPDATED:
            r = data["restart"]
            restart = RestartPolicy(
                RestartPolicyType(r["type"]), int(r["max_retries"]), int(r["timeout"])
            )
            m = data["resources"]
            if m is not None:
                resources = Resources(
                    str(m["memory"]), str(m["memory_reservation"]), str(m["memory_swap"])
                )
        return Entry(
            activity=str(data["activity"]),
            step=step,
            id=str(data["id"]),
            name=str(data["name"]),
            restart=restart,
            resources=resources,
            remove=bool(data.get("remove", False)),
        )


def journal_path(state_dir: Path, domain: str) -> Path:
    """One journal per domain: agents of several domains may share a state directory."""
    return state_dir / f"journal-{re.sub(r'[^A-Za-z0-9._-]', '_', domain)}.jsonl"


def journal_for(state_dir: Path | None, domain: str) -> Journal:
    """The journal of `domain` in the agent's state directory (off without one)."""
    if state_dir is None:
        return Journal(None)
    return Journal(journal_path(state_dir, domain))


class Journal:
    """Append-only records of one operation; `path` None: journaling is off (tools, tests)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    # --- writing -------------------------------------------------------------------------

    def started(self, activity: str) -> None:
        """A desired state is being identified: if the agent dies before it ends, the next
        start answers it (INCOMPLETE, and its commands' failure)."""
        self._append([Entry(activity, Step.STARTED, "", "")])

    def ended(self, activity: str) -> None:
        """The activity has its final status (the agent stopped mid-operation, or it ended
        at identification while another operation is pending)."""
        self._append([Entry(activity, Step.ENDED, "", "")])

    def stopped(self, activity: str, container_id: str, name: str) -> None:
        self._append([Entry(activity, Step.STOPPED, container_id, name)])

    def updated(
        self,
        activity: str,
        container_id: str,
        name: str,
        restart: RestartPolicy,
        resources: Resources | None,
    ) -> None:
        self._append([Entry(activity, Step.UPDATED, container_id, name, restart, resources)])

    def created(self, activity: str, container_id: str, name: str) -> None:
        self._append([Entry(activity, Step.CREATED, container_id, name)])

    def committed(self, activity: str, containers: Iterable[tuple[str, str, bool]]) -> None:
        """(id, name, removed by CLEANUP) of each container made final; one write."""
        entries = [
            Entry(activity, Step.COMMITTED, cid, name, remove=remove)
            for cid, name, remove in containers
        ]
        if entries:
            self._append(entries)

    def _append(self, entries: list[Entry]) -> None:
        if self.path is None:
            return
        data = b"".join(
            json.dumps(e.to_json(), separators=(",", ":")).encode() + b"\n" for e in entries
        )
        try:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _sync_dir(self.path.parent)
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc.strerror}") from exc

    # --- reading, removing ---------------------------------------------------------------

    def read(self) -> list[Entry]:
        """The records, in order; unreadable lines (a torn last line) are skipped."""
        if self.path is None:
            return []
        try:
            raw = _read_no_follow(self.path)
        except FileNotFoundError:
            return []
        except OSError as exc:  # recovery goes on by names and labels
            log.error("cannot read the journal %s: %s", self.path, exc.strerror)
            return []
        entries = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(Entry.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                log.warning("journal %s: line %d unreadable, ignored", self.path, number)
        return entries

    def remove(self) -> None:
        """The operation ended: nothing is left to recover. Never raises (logged)."""
        if self.path is None:
            return
        try:
            self.path.unlink()
            _sync_dir(self.path.parent)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot remove the journal %s: %s", self.path, exc.strerror)


def _read_no_follow(path: Path) -> bytes:
    """The file's bytes; a symbolic link in its place is refused (ELOOP), not followed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as file:
        return file.read()


def _sync_dir(directory: Path) -> None:
    """Make a file's creation or removal durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UnsafeStateDirError(Exception):
    """The state directory can be written by others: they could make recovery act."""


def prepare_state_dir(path: Path) -> Path:
    """Create the state directory (0700) if missing and check that it is writable by the
    agent and by no one else (the journal tells crash recovery what to start or remove).

    Raises OSError or UnsafeStateDirError: `cua run` reports either as a configuration
    error.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeStateDirError(
            f"writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            "the journal there tells crash recovery what to start and remove: "
            f"chmod go-w {path}"
        )
    if info.st_uid != os.geteuid():
        raise UnsafeStateDirError(
            f"owned by uid {info.st_uid}, not by the agent's user (uid {os.geteuid()})"
        )
    fd, probe = tempfile.mkstemp(dir=path, prefix=".cua-probe-")
    os.close(fd)
    os.unlink(probe)
    return path
