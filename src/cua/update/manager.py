"""The update manager: one operation at a time, queueing, modes, supersede, current state.

Skeleton of the public interface (coord/update-api.md); filled in below as it is built.
"""

from __future__ import annotations

from cua.api.models import DesiredState, DesiredStateCommand, Inventory, StatusType
from cua.engine.base import Engine
from cua.update.plan import Plan
from cua.update.publisher import FeedbackPublisher
from cua.update.settings import UpdateSettings


class UpdateManager:
    def __init__(
        self, engine: Engine, publisher: FeedbackPublisher, settings: UpdateSettings
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._settings = settings

    async def run(self) -> None:
        raise NotImplementedError

    def submit_desired_state(self, activity_id: str, desired: DesiredState) -> None:
        raise NotImplementedError

    def submit_command(self, activity_id: str, command: DesiredStateCommand) -> None:
        raise NotImplementedError

    def report_invalid(self, activity_id: str, message: str) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def current_state(self) -> Inventory:
        raise NotImplementedError

    async def plan(self, desired: DesiredState) -> Plan:
        raise NotImplementedError

    async def apply(self, activity_id: str, desired: DesiredState) -> StatusType:
        raise NotImplementedError
