"""MQTT topics of an update agent (spec §1.1, §1.2)."""

from __future__ import annotations

from dataclasses import dataclass


def topic_prefix(domain: str) -> str:
    """Domain name -> topic prefix: drop every `-`, then append `update` unless present."""
    prefix = domain.replace("-", "")
    return prefix if prefix.endswith("update") else prefix + "update"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    @classmethod
    def for_domain(cls, domain: str) -> Topics:
        return cls(topic_prefix(domain))

    @property
    def desired_state(self) -> str:
        return f"{self.prefix}/desiredstate"

    @property
    def desired_state_command(self) -> str:
        return f"{self.prefix}/desiredstate/command"

    @property
    def current_state_get(self) -> str:
        return f"{self.prefix}/currentstate/get"

    @property
    def desired_state_feedback(self) -> str:
        return f"{self.prefix}/desiredstatefeedback"

    @property
    def current_state(self) -> str:
        return f"{self.prefix}/currentstate"

    @property
    def subscriptions(self) -> tuple[str, str, str]:
        return (self.desired_state, self.desired_state_command, self.current_state_get)
