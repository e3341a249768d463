"""Wire models of the Update Agent MQTT API (spec §1.4, §2.1, §4.1, §5.1, §6.1).

msgspec Structs, frozen. Incoming (`model_validate`): unknown fields are ignored, `null` for
an object member means the field's zero value (as Go decodes it), and input values are never
echoed in validation errors (`cua.validation` names every problem by place). Outgoing
(`to_wire()`): every field is omitted when empty (Go's `omitempty`), keys in Go's struct
order; `cua.api.envelope` writes the bytes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Self

import msgspec

from cua.validation import convert


# Each model repeats `frozen=True`: msgspec inherits it, mypy's dataclass view does not.
class WireModel(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, frozen=True):
    def to_wire(self) -> dict[str, Any]:
        """The JSON object as Kanto writes it: empty fields omitted, Go key order."""
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        """The model of `data` (parsed JSON); raises `cua.validation.Invalid` naming every
        problem."""
        return convert(data, cls, strict=False)


class KeyValuePair(WireModel, frozen=True):
    key: str = ""
    value: str = ""


# --- desired state (§2.1) -------------------------------------------------------------------


class Baseline(WireModel, frozen=True):
    title: str = ""
    description: str = ""
    preconditions: str = ""
    components: list[str] = []


class ComponentWithConfig(WireModel, frozen=True):
    id: str = ""
    version: str = ""
    config: list[KeyValuePair] = []


class Domain(WireModel, frozen=True):
    id: str = ""
    config: list[KeyValuePair] = []
    components: list[ComponentWithConfig] = []


class DesiredState(WireModel, frozen=True):
    baselines: list[Baseline] = []
    domains: list[Domain] = []


# --- command (§6.1) ---------------------------------------------------------------------------


class CommandType(StrEnum):
    DOWNLOAD = "DOWNLOAD"
    UPDATE = "UPDATE"
    ACTIVATE = "ACTIVATE"
    ROLLBACK = "ROLLBACK"
    CLEANUP = "CLEANUP"


class DesiredStateCommand(WireModel, frozen=True):
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


class Component(WireModel, frozen=True, cache_hash=True):
    id: str = ""
    version: str = ""


# Hashed once: `cua.api.envelope` caches each action's JSON by the Action (a feedback
# message carries every action).
class Action(WireModel, frozen=True, cache_hash=True):
    component: Component | None = None
    status: ActionStatusType | None = None
    progress: Annotated[int, msgspec.Meta(ge=0, le=255)] = 0  # Go uint8; 0 is omitted
    message: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.progress <= 255:
            raise ValueError("progress: must be 0 to 255")


class DesiredStateFeedback(WireModel, frozen=True):
    baseline: str = ""
    status: StatusType | None = None
    message: str = ""
    actions: list[Action] = []


# --- inventory (§5.1) ---------------------------------------------------------------------------


class SoftwareType(StrEnum):
    IMAGE = "IMAGE"
    RAW = "RAW"
    DATA = "DATA"
    APPLICATION = "APPLICATION"
    CONTAINER = "CONTAINER"


class SoftwareNode(WireModel, frozen=True):
    id: str = ""
    version: str = ""
    name: str = ""
    parameters: list[KeyValuePair] = []
    type: SoftwareType | None = None


class HardwareNode(WireModel, frozen=True):
    id: str = ""
    version: str = ""
    name: str = ""
    parameters: list[KeyValuePair] = []
    addressable: bool = False


class Association(WireModel, frozen=True):
    source_id: str = ""
    target_id: str = ""


class Inventory(WireModel, frozen=True):
    hardware_nodes: list[HardwareNode] = []
    software_nodes: list[SoftwareNode] = []
    associations: list[Association] = []
