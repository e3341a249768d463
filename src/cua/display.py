"""Human-readable renderings: the feedback stream (one line per message) and plans.

Used by `cua apply` and `make demo`; machines read the JSON instead (`--json`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cua.api.models import Action, DesiredStateFeedback, StatusType
from cua.containers.compare import IDENTIFIED_MESSAGES, ActionKind
from cua.update.plan import Plan

__all__ = ["FeedbackPrinter", "plan_as_json", "plan_table"]

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


def plan_table(plan: Plan) -> str:
    """One row per action; RECREATE/UPDATE rows list the fields that differ."""
    if not plan.actions:
        lines = ["nothing to do"]
    else:
        width_name = max(len(a.name) for a in plan.actions)
        width_version = max(len(a.version) for a in plan.actions)
        lines = [
            f"{'ACTION':<8}  {'CONTAINER':<{width_name}}  {'VERSION':<{width_version}}  DETAILS"
        ]
        for action in plan.actions:
            details = ""
            if action.kind in (ActionKind.RECREATE, ActionKind.UPDATE) and action.differences:
                details = "differs: " + ", ".join(action.differences)
            elif action.kind is ActionKind.CREATE and action.desired is not None:
                details = f"image {action.desired.image_as_given}"
            elif action.kind is ActionKind.DESTROY and action.current is not None:
                details = f"image {action.current.image}"
            lines.append(
                f"{action.kind.value:<8}  {action.name:<{width_name}}  "
                f"{action.version:<{width_version}}  {details}".rstrip()
            )
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
