"""Human-readable renderings: the feedback stream (one line per message), plans (each
differing field old → new, env values hidden) and the current state as a table.

Used by `cua apply`, `cua plan`, `cua state` and `make demo`; machines read the JSON instead
(`--json`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from cua.api.models import Action, DesiredStateFeedback, Inventory, SoftwareType, StatusType
from cua.containers.compare import IDENTIFIED_MESSAGES, ActionKind
from cua.containers.inventory import configuration_parameters
from cua.containers.spec import ContainerSpec
from cua.logformat import split_activity
from cua.update.plan import Plan, PlannedAction

__all__ = [
    "FeedbackPrinter",
    "ProgressLogHandler",
    "field_changes",
    "plan_as_json",
    "plan_table",
    "state_table",
]

HIDDEN = "<hidden>"
NONE = "(none)"
# Fields whose entries form a set (Kanto compares them so): only the entries that differ show.
_SET_FIELDS = frozenset({"env", "mount", "device", "host", "port"})

# The IDENTIFIED message text is the only place the action kind shows on the wire (§3.1).
_KIND_BY_MESSAGE = {message: kind.value.lower() for kind, message in IDENTIFIED_MESSAGES.items()}


def _short_id(component_id: str) -> str:
    return component_id.split(":", 1)[1] if ":" in component_id else component_id


def _action_key(action: Action) -> str:
    return action.component.id if action.component else ""


def _describe_action(action: Action) -> str:
    name = _short_id(_action_key(action))
    status = action.status.value if action.status else "-"
    text = f"{name} {status}"
    if action.progress:
        text += f" {action.progress}%"
    if action.message and action.message not in _KIND_BY_MESSAGE:
        text += f" ({action.message})"
    return text


class FeedbackPrinter:
    """Formats successive feedback messages of one operation, one line each.

    Each line shows the elapsed time, the status, and only what changed since the previous
    message (the actions whose status, progress or message changed), so that a long
    operation reads like a log.
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = time.monotonic() if start is None else start
        self._previous: dict[str, Action] = {}

    def format(self, feedback: DesiredStateFeedback) -> str:
        elapsed = time.monotonic() - self._start
        status = feedback.status.value if feedback.status else "-"
        head = f"[{elapsed:6.1f}s] {status:<21}"
        if feedback.baseline:
            head += f" baseline {feedback.baseline!r}"
        parts: list[str] = []
        if feedback.status is StatusType.IDENTIFIED:
            kinds = [
                f"{_short_id(_action_key(a))}: {_KIND_BY_MESSAGE.get(a.message, a.message)}"
                for a in feedback.actions
            ]
            parts.append(f"{len(feedback.actions)} action(s): " + ", ".join(kinds))
        else:
            changed = [a for a in feedback.actions if self._previous.get(_action_key(a)) != a]
            parts.extend(_describe_action(a) for a in changed)
        if feedback.message:
            parts.append(feedback.message)
        self._previous = {_action_key(a): a for a in feedback.actions}
        line = head.rstrip()
        if parts:
            line = f"{head} " + "; ".join(parts)
        return line

    def note(self, level: str, message: str) -> str:
        """A warning or error of the operation, as a line of the same display."""
        elapsed = time.monotonic() - self._start
        return f"[{elapsed:6.1f}s] {level.lower()}: {message}"


class ProgressLogHandler(logging.Handler):
    """Log records (WARNING and up) as lines of the progress display (`cua apply`),
    instead of timestamped log lines interleaved with it."""

    def __init__(self, printer: FeedbackPrinter, stream: Callable[[], TextIO]) -> None:
        super().__init__(logging.WARNING)
        self._printer = printer
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # The operation is the one on display: its activityId prefix says nothing more.
            _, message = split_activity(record)
            line = self._printer.note(record.levelname, message)
            print(line, file=self._stream(), flush=True)
        except Exception:
            self.handleError(record)


def _hide_env(entry: str) -> str:
    """`NAME=value` -> `NAME=<hidden>`: env values may be secrets."""
    name, _, _ = entry.partition("=")
    return f"{name}={HIDDEN}"


def _values(spec: ContainerSpec, key: str) -> list[str]:
    values = [value for name, value in configuration_parameters(spec) if name == key]
    return [_hide_env(v) for v in values] if key == "env" else values


def field_changes(
    current: ContainerSpec, desired: ContainerSpec, keys: Sequence[str]
) -> list[tuple[str, str, str]]:
    """(key, old, new) for each differing field, by its Kanto config key.

    For set-like fields (env, mount, device, host, port) only the entries on one side and
    not the other are shown; env values are hidden (`NAME=<hidden>`)."""
    changes = []
    for key in keys:
        old, new = _values(current, key), _values(desired, key)
        if key in _SET_FIELDS and key != "env":
            old, new = [v for v in old if v not in new], [v for v in new if v not in old]
        elif key == "env":
            raw_old, raw_new = set(current.env), set(desired.env)
            old = [_hide_env(v) for v in current.env if v not in raw_new]
            new = [_hide_env(v) for v in desired.env if v not in raw_old]
        changes.append((key, ", ".join(old) or NONE, ", ".join(new) or NONE))
    return changes


def _change_lines(action: PlannedAction) -> list[str]:
    current = action.current.spec if action.current is not None else None
    desired = action.desired.spec if action.desired is not None else None
    if current is None or desired is None:
        return [f"    {key}: differs" for key in action.differences]
    return [
        f"    {key}: {old} → {new}"
        for key, old, new in field_changes(current, desired, action.differences)
    ]


def plan_table(plan: Plan) -> str:
    """One row per action; under a RECREATE/UPDATE row, each differing field old → new."""
    if not plan.actions:
        lines = ["nothing to do"]
    else:
        width_name = max(len("CONTAINER"), *(len(a.name) for a in plan.actions))
        width_version = max(len("VERSION"), *(len(a.version) for a in plan.actions))
        lines = [
            f"{'ACTION':<8}  {'CONTAINER':<{width_name}}  {'VERSION':<{width_version}}  DETAILS"
        ]
        for action in plan.actions:
            details = ""
            if action.kind is ActionKind.CREATE and action.desired is not None:
                details = f"image {action.desired.image_as_given}"
            elif action.kind is ActionKind.DESTROY and action.current is not None:
                details = f"image {action.current.image}"
            lines.append(
                f"{action.kind.value:<8}  {action.name:<{width_name}}  "
                f"{action.version:<{width_version}}  {details}".rstrip()
            )
            if action.kind in (ActionKind.RECREATE, ActionKind.UPDATE):
                lines.extend(_change_lines(action))
    lines.extend(f"warning: {warning}" for warning in plan.warnings)
    if plan.system_containers:
        lines.append("system containers (never touched): " + ", ".join(plan.system_containers))
    return "\n".join(lines)


def plan_as_json(plan: Plan) -> Mapping[str, Any]:
    return {
        "actions": [
            {
                "kind": action.kind.value,
                "component": {"id": action.component_id, "version": action.version},
                "message": action.message,
                "differences": list(action.differences),
            }
            for action in plan.actions
        ],
        "baselines": {title: list(indexes) for title, indexes in plan.baselines.items()},
        "warnings": list(plan.warnings),
        "systemContainers": list(plan.system_containers),
    }


def _parameter(node_parameters: Sequence[Any], key: str, default: str = "") -> str:
    return next((p.value for p in node_parameters if p.key == key), default)


def _since(timestamp: str) -> str:
    """`2023-08-25T08:51:21.122997391Z` -> `2023-08-25 08:51:21 UTC`."""
    if len(timestamp) < 19:
        return timestamp or "-"
    return f"{timestamp[:10]} {timestamp[11:19]} UTC"


def state_table(inventory: Inventory) -> str:
    """The current state as `docker compose ps` would show it: one row per container."""
    rows = [("NAME", "VERSION", "IMAGE", "STATUS", "SINCE", "MANAGED")]
    for node in inventory.software_nodes:
        if node.type is not SoftwareType.CONTAINER:
            continue
        parameters = node.parameters
        rows.append(
            (
                node.id.split(":", 1)[1] if ":" in node.id else node.id,
                node.version,
                _parameter(parameters, "image"),
                _parameter(parameters, "status"),
                _since(_parameter(parameters, "created")),
                "no" if _parameter(parameters, "managed", "true") == "false" else "yes",
            )
        )
    if len(rows) == 1:
        return "no containers"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
