"""The message envelope `{activityId, timestamp, payload}` (spec §1.4): decode and encode.

Encoding writes bytes as Go's `encoding/json` does (compact, UTF-8, HTML-safe escapes), so
that messages are byte-for-byte what Kanto sends for the same content.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from cua.api.models import WireModel

PayloadT = TypeVar("PayloadT", bound=WireModel)

# Go's json.Marshal escapes these for safe embedding in HTML.
_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class MessageError(ValueError):
    """An incoming message that cannot be used. `activity_id` is None when unreadable.

    The message says what is wrong and where, never the offending values.
    """

    def __init__(self, message: str, activity_id: str | None) -> None:
        super().__init__(message)
        self.activity_id = activity_id


@dataclass(frozen=True, slots=True)
class Envelope(Generic[PayloadT]):
    activity_id: str
    timestamp: int
    payload: PayloadT | None


# A lone UTF-16 surrogate (possible in text decoded from JSON `\ud800` escapes) is not
# encodable as UTF-8; Go writes U+FFFD for invalid text, so do we.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def go_json(value: Any) -> bytes:
    """JSON bytes as Go's json.Marshal writes them."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _LONE_SURROGATE.sub("\ufffd", text.translate(_GO_ESCAPES)).encode()


def encode(activity_id: str, payload: WireModel | None, timestamp: int | None = None) -> bytes:
    """An envelope as bytes; all three keys are always present."""
    return go_json(
        {
            "activityId": activity_id,
            "timestamp": now_ms() if timestamp is None else timestamp,
            "payload": None if payload is None else payload.to_wire(),
        }
    )


def describe_validation_error(error: ValidationError, root: str = "payload") -> str:
    """`payload.domains[0].components[1].config[2].value: Input should be a valid string`."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = root
        for loc in item["loc"]:
            where += f"[{loc}]" if isinstance(loc, int) else f".{loc}"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode(raw: bytes | str, payload_type: type[PayloadT], what: str) -> Envelope[PayloadT]:
    """Parse an incoming envelope. Raises MessageError (with the activityId if readable).

    `what` names the message in errors, e.g. "desired state".
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        line_info = ""
        if isinstance(exc, json.JSONDecodeError):
            line_info = f" at line {exc.lineno} column {exc.colno}"
        raise MessageError(f"invalid {what}: not valid JSON{line_info}", None) from None
    if not isinstance(data, dict):
        raise MessageError(f"invalid {what}: the message is not a JSON object", None)
    activity_id = data.get("activityId")
    readable_id = activity_id if isinstance(activity_id, str) else None
    if activity_id is not None and not isinstance(activity_id, str):
        raise MessageError(f"invalid {what}: activityId: must be a string", None)
    timestamp = data.get("timestamp", 0)
    if timestamp is None:
        timestamp = 0
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise MessageError(f"invalid {what}: timestamp: must be an integer", readable_id)
    payload_data = data.get("payload")
    payload: PayloadT | None = None
    if payload_data is not None:
        try:
            payload = payload_type.model_validate(payload_data)
        except ValidationError as exc:
            raise MessageError(
                f"invalid {what}: {describe_validation_error(exc)}", readable_id
            ) from None
    return Envelope(activity_id=readable_id or "", timestamp=int(timestamp), payload=payload)
