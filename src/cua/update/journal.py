"""The write-ahead journal of the running operation, in the agent's state directory.

Names and labels tell recovery which containers a RECREATE had in flight, but some changes
leave no trace on the containers: a container stopped for DESTROY, a runtime update of an
UPDATE action (its previous restart policy and limits), a CREATE's container that already
took its real name. Before each such engine change the operation appends one record here
(JSON lines, fsync'd), so that after a crash `recovery` can put the device back as it was
before the operation. When CLEANUP commits an activated baseline, `committed` records say
which containers are final (and which removals recovery must finish). When the operation
ends (COMPLETED, INCOMPLETE, SUPERSEDED) a `finished` record carries its final status: its
changes are final, recovery restores nothing of it, but until the broker has acknowledged
that status (QoS 1 PUBACK) a restart publishes it again (at least once: a kill in that
window may give a duplicate). On that acknowledgement the activity's records are dropped
(`close`), the file is removed once no activity is left in it: a next operation that
started meanwhile keeps its own records. An operation interrupted by a crash or by the
agent stopping keeps its records for the next start.

Only container ids, names, restart policies, memory values and final statuses (with their
message) are written: never env values or any other part of a desired state. A torn last
line (crash while writing) is ignored on reading.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cua.api.models import StatusType
from cua.containers.spec import (
    Resources,
    RestartPolicy,
    RestartPolicyType,
    recorded_size,
    size_text,
)
from cua.settings import domain_file_part

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
    FINISHED = "finished"  # the final status, owed until the broker acknowledges it


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
    status: str = ""  # FINISHED: the final status and its message
    message: str = ""
    interrupted: bool = False  # FINISHED: given by recovery (later commands get the failure)

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
                    "memory": size_text(self.resources.memory),
                    "memory_reservation": size_text(self.resources.memory_reservation),
                    "memory_swap": size_text(self.resources.memory_swap),
                }
            )
        if self.step is Step.COMMITTED:
            data["remove"] = self.remove
        if self.step is Step.FINISHED:
            data["status"] = self.status
            data["message"] = self.message
            data["interrupted"] = self.interrupted
        return data

    @staticmethod
    def from_json(data: Any) -> Entry:
        """Raises ValueError (or KeyError, TypeError) for a record that is not ours."""
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise ValueError("not a version 1 record")
        step = Step(data["step"])
        if step is Step.FINISHED:
            StatusType(data["status"])  # a final status we can publish again
        restart = resources = None
        if step is Step.UPDATED:
            r = data["restart"]
            restart = RestartPolicy(
                RestartPolicyType(r["type"]), int(r["max_retries"]), int(r["timeout"])
            )
            m = data["resources"]
            if m is not None:
                resources = Resources(
                    *(
                        recorded_size(str(m[k]))
                        for k in ("memory", "memory_reservation", "memory_swap")
                    )
                )
        return Entry(
            activity=str(data["activity"]),
            step=step,
            id=str(data["id"]),
            name=str(data["name"]),
            restart=restart,
            resources=resources,
            remove=bool(data.get("remove", False)),
            status=str(data.get("status", "")),
            message=str(data.get("message", "")),
            interrupted=bool(data.get("interrupted", False)),
        )


def journal_path(state_dir: Path, domain: str) -> Path:
    """One journal per domain: agents of several domains may share a state directory."""
    return state_dir / f"journal-{domain_file_part(domain)}.jsonl"


def journal_for(state_dir: Path | None, domain: str) -> Journal:
    """The journal of `domain` in the agent's state directory (off without one)."""
    if state_dir is None:
        return Journal(None)
    return Journal(journal_path(state_dir, domain))


class Journal:
    """Append-only records of one operation; `path` None: journaling is off (tools, tests)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @property
    def durable(self) -> bool:
        """Whether records are written (to disk, fsync'd) at all."""
        return self.path is not None

    # --- writing -------------------------------------------------------------------------

    def started(self, activity: str) -> None:
        """A desired state is being identified: if the agent dies before it ends, the next
        start answers it (INCOMPLETE, and its commands' failure)."""
        self._append([Entry(activity, Step.STARTED, "", "")])

    def ended(self, activity: str) -> None:
        """The activity has its final status (the agent stopped mid-operation, or it ended
        at identification while another operation is pending)."""
        self._append([Entry(activity, Step.ENDED, "", "")])

    def finished(
        self, activity: str, status: str, message: str = "", *, interrupted: bool = False
    ) -> None:
        """The activity ends with `status`, about to be published: until `close`, a restart
        publishes it again and restores nothing of this activity."""
        self._append(
            [
                Entry(
                    activity,
                    Step.FINISHED,
                    "",
                    "",
                    status=status,
                    message=message,
                    interrupted=interrupted,
                )
            ]
        )

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
        data = _encode(entries)
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

    def close(self, activity: str) -> None:
        """The broker has `activity`'s final status: its records up to its (first)
        `finished` record, all of them without one, are dropped; the file goes when nothing
        is left. Records of another activity (a next operation) stay. Never raises (logged).
        """
        entries = self.read()
        end = next(
            (
                i
                for i, e in enumerate(entries)
                if e.activity == activity and e.step is Step.FINISHED
            ),
            len(entries),
        )
        kept = [e for i, e in enumerate(entries) if i > end or e.activity != activity]
        if len(kept) < len(entries) or not kept:
            self.replace(kept)

    def replace(self, entries: list[Entry]) -> None:
        """Make `entries` the journal's content, atomically (none: the file is removed).
        Never raises (logged): the previous content is then kept."""
        if self.path is None:
            return
        try:
            if not entries:
                self.path.unlink(missing_ok=True)
            else:
                fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".cua-journal-")
                try:
                    try:
                        os.write(fd, _encode(entries))
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.replace(temporary, self.path)  # a link there is replaced, not followed
                except OSError:
                    os.unlink(temporary)
                    raise
            _sync_dir(self.path.parent)
        except OSError as exc:
            log.error("cannot rewrite the journal %s: %s", self.path, exc.strerror)


def _encode(entries: list[Entry]) -> bytes:
    return b"".join(
        json.dumps(e.to_json(), separators=(",", ":")).encode() + b"\n" for e in entries
    )


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
