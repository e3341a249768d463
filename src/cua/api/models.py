"""Wire models of the Update Agent MQTT API (spec §1.4, §2.1, §4.1, §5.1, §6.1).

Incoming: unknown fields are ignored, `null` means the zero value (as Go decodes it), and
input values are never echoed in validation errors. Outgoing: every field is omitted when
empty (Go's `omitempty`), keys in Go's struct order; `cua.api.envelope` writes the bytes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        hide_input_in_errors=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_zero_value(cls, data: Any) -> Any:
        # Go decodes `null` into the zero value of the field; so do we.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    def to_wire(self) -> dict[str, Any]:
        """The JSON object as Kanto writes it: empty fields omitted, Go key order."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class KeyValuePair(WireModel):
    key: str = ""
    value: str = ""


# --- desired state (§2.1) -------------------------------------------------------------------


class Baseline(WireModel):
    title: str = ""
    description: str = ""
    preconditions: str = ""
    components: list[str] = Field(default_factory=list)


class ComponentWithConfig(WireModel):
    id: str = ""
    version: str = ""
    config: list[KeyValuePair] = Field(default_factory=list)


class Domain(WireModel):
    id: str = ""
    config: list[KeyValuePair] = Field(default_factory=list)
    components: list[ComponentWithConfig] = Field(default_factory=list)


class DesiredState(WireModel):
    baselines: list[Baseline] = Field(default_factory=list)
    domains: list[Domain] = Field(default_factory=list)


# --- command (§6.1) ---------------------------------------------------------------------------


class CommandType(StrEnum):
    DOWNLOAD = "DOWNLOAD"
    UPDATE = "UPDATE"
    ACTIVATE = "ACTIVATE"
    ROLLBACK = "ROLLBACK"
    CLEANUP = "CLEANUP"


class DesiredStateCommand(WireModel):
    # A plain string: an unknown command is not a schema error; Kanto ignores it (§3.4).
    command: str = ""
    baseline: str = ""


# --- feedback (§4) ----------------------------------------------------------------------------


class StatusType(StrEnum):
    IDENTIFYING = "IDENTIFYING"
    IDENTIFIED = "IDENTIFIED"
    IDENTIFICATION_FAILED = "IDENTIFICATION_FAILED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    INCOMPLETE = "INCOMPLETE"
    INCOMPLETE_INCONSISTENT = "INCOMPLETE_INCONSISTENT"
    SUPERSEDED = "SUPERSEDED"
    DOWNLOADING = "DOWNLOADING"
    DOWNLOAD_SUCCESS = "DOWNLOAD_SUCCESS"
    DOWNLOAD_FAILURE = "DOWNLOAD_FAILURE"
    ROLLBACK = "ROLLBACK"
    ROLLBACK_SUCCESS = "ROLLBACK_SUCCESS"
    ROLLBACK_FAILURE = "ROLLBACK_FAILURE"
    UPDATING = "UPDATING"
    UPDATE_SUCCESS = "UPDATE_SUCCESS"
    UPDATE_FAILURE = "UPDATE_FAILURE"
    ACTIVATING = "ACTIVATING"
    ACTIVATION_SUCCESS = "ACTIVATION_SUCCESS"
    ACTIVATION_FAILURE = "ACTIVATION_FAILURE"
    CLEANUP = "CLEANUP"
    CLEANUP_SUCCESS = "CLEANUP_SUCCESS"
    CLEANUP_FAILURE = "CLEANUP_FAILURE"


class ActionStatusType(StrEnum):
    IDENTIFIED = "IDENTIFIED"
    DOWNLOADING = "DOWNLOADING"
    DOWNLOAD_FAILURE = "DOWNLOAD_FAILURE"
    DOWNLOAD_SUCCESS = "DOWNLOAD_SUCCESS"
    UPDATING = "UPDATING"
    UPDATE_FAILURE = "UPDATE_FAILURE"
    UPDATE_SUCCESS = "UPDATE_SUCCESS"
    REMOVING = "REMOVING"
    REMOVAL_FAILURE = "REMOVAL_FAILURE"
    REMOVAL_SUCCESS = "REMOVAL_SUCCESS"
    ACTIVATING = "ACTIVATING"
    ACTIVATION_FAILURE = "ACTIVATION_FAILURE"
    ACTIVATION_SUCCESS = "ACTIVATION_SUCCESS"


class Component(WireModel):
    id: str = ""
    version: str = ""


class Action(WireModel):
    component: Component | None = None
    status: ActionStatusType | None = None
    progress: int = Field(default=0, ge=0, le=255)  # Go uint8; 0 is omitted
    message: str = ""

    def to_wire(self) -> dict[str, Any]:
        # Kept by value in `_ACTION_WIRE`: a feedback message carries every action, most
        # of them unchanged since the last message (a no-op of N containers is N+3
        # messages of N actions each).
        component = self.component
        key = (
            None if component is None else (component.id, component.version),
            self.status,
            self.progress,
            self.message,
        )
        wire = _ACTION_WIRE.get(key)
        if wire is None:
            if len(_ACTION_WIRE) >= _ACTION_WIRE_SIZE:
                _ACTION_WIRE.clear()  # bounded; refilled by the next messages
            wire = _ACTION_WIRE[key] = super().to_wire()
        copy = dict(wire)  # the caller's to change: the kept one stays as it is
        if "component" in copy:
            copy["component"] = dict(copy["component"])
        return copy


# An action's fields -> its wire form.
_ACTION_WIRE: dict[tuple[Any, ...], dict[str, Any]] = {}
_ACTION_WIRE_SIZE = 4096


class DesiredStateFeedback(WireModel):
    baseline: str = ""
    status: StatusType | None = None
    message: str = ""
    actions: list[Action] = Field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        """As `WireModel.to_wire` (empty fields omitted, Go key order), with each action's
        wire form built once per action (`Action.to_wire`)."""
        wire: dict[str, Any] = {}
        if self.baseline:
            wire["baseline"] = self.baseline
        if self.status is not None:
            wire["status"] = self.status.value
        if self.message:
            wire["message"] = self.message
        if self.actions:
            wire["actions"] = [action.to_wire() for action in self.actions]
        return wire


# --- inventory (§5.1) ---------------------------------------------------------------------------


class SoftwareType(StrEnum):
    IMAGE = "IMAGE"
    RAW = "RAW"
    DATA = "DATA"
    APPLICATION = "APPLICATION"
    CONTAINER = "CONTAINER"


class SoftwareNode(WireModel):
    id: str = ""
    version: str = ""
    name: str = ""
    parameters: list[KeyValuePair] = Field(default_factory=list)
    type: SoftwareType | None = None


class HardwareNode(WireModel):
    id: str = ""
    version: str = ""
    name: str = ""
    parameters: list[KeyValuePair] = Field(default_factory=list)
    addressable: bool = False


class Association(WireModel):
    source_id: str = ""
    target_id: str = ""


class Inventory(WireModel):
    hardware_nodes: list[HardwareNode] = Field(default_factory=list)
    software_nodes: list[SoftwareNode] = Field(default_factory=list)
    associations: list[Association] = Field(default_factory=list)
