"""JSON Schemas of the Update Agent API messages, generated from the wire models.

`python -m cua.api.schema DIR` (`make schema`) writes one schema per payload and one per
envelope into DIR (`docs/schema/` in the repository). The schemas document the wire format
(spec §1.4, §2.1, §4.1, §5.1, §6.1); the models stay the single source of truth.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from cua.api import models
from cua.api.models import (
    DesiredState,
    DesiredStateCommand,
    DesiredStateFeedback,
    Inventory,
    WireModel,
)

# file stem -> (payload model, topic suffix, direction)
MESSAGES: Mapping[str, tuple[type[WireModel], str, str]] = {
    "desired-state": (DesiredState, "desiredstate", "in"),
    "desired-state-command": (DesiredStateCommand, "desiredstate/command", "in"),
    "desired-state-feedback": (DesiredStateFeedback, "desiredstatefeedback", "out"),
    "inventory": (Inventory, "currentstate", "out"),
}


def envelope_model(payload: type[WireModel], *, outgoing: bool) -> type[msgspec.Struct]:
    """The envelope `{activityId, timestamp, payload}` around `payload`.

    The agent always writes all three keys; it accepts messages that lack any of them.
    """
    activity_id = Annotated[
        str, msgspec.Meta(description="Correlates requests, feedback and current state replies.")
    ]
    timestamp = Annotated[int, msgspec.Meta(description="Milliseconds since the Unix epoch.")]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = (
        [("activityId", activity_id), ("timestamp", timestamp), ("payload", payload | None)]
        if outgoing
        else [
            ("activityId", activity_id, ""),
            ("timestamp", timestamp, 0),
            ("payload", payload | None, None),
        ]
    )
    return msgspec.defstruct(f"{payload.__name__}Envelope", fields)


def _json_schema(model: type[msgspec.Struct], description: str) -> dict[str, Any]:
    """The schema of `model`, the schemas of the types it holds under `$defs`."""
    _, components = msgspec.json.schema_components([model])  # refs: #/$defs/{name}
    for name, component in components.items():
        if component.get("required") == []:
            del component["required"]
        if "enum" in component:  # the values in the code's (Go's) order, not sorted
            component["type"] = "string"
            component["enum"] = [member.value for member in getattr(models, name)]
    schema: dict[str, Any] = components.pop(model.__name__)
    schema["description"] = description
    if components:
        schema = {"$defs": dict(sorted(components.items())), **schema}
    return schema


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every payload and every envelope."""
    result: dict[str, dict[str, Any]] = {}
    for stem, (model, topic, direction) in MESSAGES.items():
        sender = "agent to manager" if direction == "out" else "manager to agent"
        what = f"on `<prefix>/{topic}` ({sender})"
        result[f"{stem}.json"] = _json_schema(model, f"The payload of the message {what}.")
        envelope = envelope_model(model, outgoing=direction == "out")
        result[f"{stem}-envelope.json"] = _json_schema(envelope, f"The whole message {what}.")
    return result


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cua.api.schema DIR", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
