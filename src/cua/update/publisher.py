"""How update operations report: a small interface, no MQTT here."""

from __future__ import annotations

from typing import Protocol

from cua.api.models import DesiredStateFeedback


class FeedbackPublisher(Protocol):
    async def publish_feedback(self, activity_id: str, feedback: DesiredStateFeedback) -> None:
        """Publish one feedback message (the agent wraps it in an envelope, QoS 1)."""
        ...
