"""Test helpers for feedback: a recording publisher and the progress collapse.

Our DOWNLOAD phase adds DOWNLOADING messages that carry an action's `progress`. Removing
them (`collapse_progress`) must give exactly Kanto's sequence; tests assert that.
"""

from __future__ import annotations

import copy
from typing import Any

from cua.api.models import DesiredStateFeedback
from cua.update.publisher import Delivered


class RecordingPublisher:
    """A `FeedbackPublisher` that keeps every message, in order. It acknowledges each one
    at once, or, with `acknowledge=False`, never (a broker that got none of them: the
    agent killed before any PUBACK); `acknowledge_all()` then delivers them."""

    def __init__(self, *, acknowledge: bool = True) -> None:
        self.messages: list[tuple[str, DesiredStateFeedback]] = []
        self.acknowledge = acknowledge
        self.unacknowledged: list[Delivered] = []

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Delivered | None = None,
    ) -> None:
        self.messages.append((activity_id, copy.deepcopy(feedback)))
        if on_delivered is not None:
            self.unacknowledged.append(on_delivered)
        if self.acknowledge:
            self.acknowledge_all()

    def acknowledge_all(self) -> None:
        while self.unacknowledged:
            self.unacknowledged.pop(0)()

    def wire(self, activity_id: str | None = None) -> list[dict[str, Any]]:
        """The payloads as Kanto writes them (`to_wire()`), optionally for one activity."""
        return [
            feedback.to_wire()
            for aid, feedback in self.messages
            if activity_id is None or aid == activity_id
        ]

    def statuses(self, activity_id: str | None = None) -> list[str]:
        return [str(message.get("status", "")) for message in self.wire(activity_id)]


def strip_progress(message: dict[str, Any]) -> dict[str, Any]:
    """A wire payload without any action's `progress`."""
    result = dict(message)
    if "actions" in result:
        result["actions"] = [
            {k: v for k, v in action.items() if k != "progress"} for action in result["actions"]
        ]
    return result


def has_progress(message: dict[str, Any]) -> bool:
    return any("progress" in action for action in message.get("actions", []))


def collapse_progress(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop each progress message that equals the message before it once `progress` is
    stripped: what remains must be Kanto's sequence (a progress message that differs in
    anything else is kept, so that the comparison fails)."""
    result: list[dict[str, Any]] = []
    for message in messages:
        if has_progress(message) and result and strip_progress(message) == result[-1]:
            continue
        result.append(strip_progress(message) if has_progress(message) else message)
    return result
