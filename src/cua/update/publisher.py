"""How update operations report: a small interface, no MQTT here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cua.api.models import DesiredStateFeedback

Delivered = Callable[[], None]


class FeedbackPublisher(Protocol):
    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Delivered | None = None,
    ) -> None:
        """Publish one feedback message (the agent wraps it in an envelope, QoS 1).

        `on_delivered` is called once the message is out of the agent's hands: after the
        broker's PUBACK, at once for a publisher without a broker; never for a message that
        is lost (queue overflow, agent stopped or killed first). It must not raise."""
        ...
