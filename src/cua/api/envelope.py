"""The message envelope `{activityId, timestamp, payload}` (spec §1.4): decode and encode.

Encoding writes bytes as Go's `encoding/json` does (compact, UTF-8, HTML-safe escapes), so
that messages are byte-for-byte what Kanto sends for the same content.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, Generic, TypeVar

from cua.api.models import Action, DesiredStateFeedback, StatusType, WireModel
from cua.validation import Invalid

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


_MAX_INT_DIGITS = 400  # far beyond int64 (19 digits), far below int()'s limit (4,300)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


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


def encode_with_payload(activity_id: str, payload: bytes, timestamp: int | None = None) -> bytes:
    """`encode()` for a payload already encoded with `go_json` (one payload, many replies):
    the same bytes."""
    stamp = now_ms() if timestamp is None else timestamp
    return b"".join((_envelope_opening(activity_id), b"%d" % stamp, b',"payload":', payload, b"}"))


@functools.lru_cache(maxsize=64)
def _envelope_opening(activity_id: str) -> bytes:
    return b'{"activityId":' + go_json(activity_id) + b',"timestamp":'


def encode_feedback(
    activity_id: str, feedback: DesiredStateFeedback, timestamp: int | None = None
) -> bytes:
    """`encode()` of a feedback message, the same bytes, faster: every feedback message
    carries every action (its bytes grow with the square of the component count), and most
    actions are the same as in the previous message, so each action's JSON is cached, as
    are the parts that repeat from one message to the next."""
    head = _feedback_head(feedback.baseline, feedback.status, feedback.message)
    if not feedback.actions:
        return encode_with_payload(activity_id, head, timestamp)
    actions = b",".join([_action_json(action) for action in feedback.actions])
    payload = b"".join((head[:-1], b',"actions":[' if len(head) > 2 else b'"actions":[',
                        actions, b"]}"))  # fmt: skip
    return encode_with_payload(activity_id, payload, timestamp)


@functools.lru_cache(maxsize=256)
def _feedback_head(baseline: str, status: StatusType | None, message: str) -> bytes:
    """A feedback message's JSON without its actions."""
    return go_json(
        DesiredStateFeedback(baseline=baseline, status=status, message=message).to_wire()
    )


@functools.lru_cache(maxsize=8192)
def _action_json(action: Action) -> bytes:
    return go_json(action.to_wire())


# The component config keys Kanto knows (spec §2.3): names, never values, so they may be
# named in an error; any other text of a message is not echoed (it could be a secret).
_CONFIG_KEYS = frozenset(
    [
        "image",
        "env",
        "cmd",
        "host",
        "device",
        "port",
        "mount",
        "network",
        "privileged",
        "terminal",
        "interactive",
        "restartPolicy",
        "restartMaxRetries",
        "restartTimeout",
        "logDriver",
        "logMaxFiles",
        "logMaxSize",
        "logPath",
        "logMode",
        "logMaxBufferSize",
        "memory",
        "memoryReservation",
        "memorySwap",
    ]
)


_MAX_NAMED_ID = 64


def _component_context(data: Any, loc: tuple[int | str, ...]) -> str:
    """` (component "web", key "restartPolicy")` for an error inside a component's config
    entry (`domains[i].components[j].config[k]...`): the indexes alone do not tell an
    operator which entry is wrong. The component id is named (as every feedback action names
    it; cut, JSON-quoted), the key only when it is a known config key (any other text could
    be a value). "" elsewhere."""
    if len(loc) < 6 or loc[0] != "domains" or loc[2] != "components" or loc[4] != "config":
        return ""
    try:
        component = data["domains"][loc[1]]["components"][loc[3]]
        key = component["config"][loc[5]].get("key")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    named = []
    component_id = component.get("id")
    if isinstance(component_id, str) and component_id:
        if len(component_id) > _MAX_NAMED_ID:
            component_id = component_id[:_MAX_NAMED_ID] + "…"
        named.append(f"component {json.dumps(component_id, ensure_ascii=False)}")
    if isinstance(key, str) and key in _CONFIG_KEYS:
        named.append(f'key "{key}"')
    return f" ({', '.join(named)})" if named else ""


def describe_validation_error(error: Invalid, root: str = "payload", data: Any = None) -> str:
    """`payload.domains[0].components[1].config[2].value (component "web", key
    "restartPolicy"): Input should be a valid string`, every problem, `; ` between them;
    `data`: the input, to name the component and a known config key."""
    parts = []
    for location, text in error.problems:
        where = root
        for loc in location:
            where += f"[{loc}]" if isinstance(loc, int) else f".{loc}"
        where += _component_context(data, location)
        parts.append(f"{where}: {text}")
    return "; ".join(parts)


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN/Infinity/-Infinity; they are not JSON (Go refuses them).
    raise _NotJson(f"{name} is not JSON")


def _bounded_int(text: str) -> int | float:
    # int() refuses more than 4,300 digits (ValueError); such a number is out of every
    # range we check, so it becomes a float (inf) that fails the type check where it is.
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def load_json(raw: bytes | str) -> Any:
    """`json.loads` that raises only ValueError (with a reason) on any input. A lone
    surrogate escape (`"\\ud800"`) decodes to U+FFFD, as Go's decoder does: such text could
    not be encoded again (as a key, msgspec fails on it)."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_int=_bounded_int)
        if _may_hold_lone_surrogates(raw):
            data = _without_lone_surrogates(data)
        return data
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON at line {exc.lineno} column {exc.colno}") from None
    except _NotJson as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    except ValueError:  # bytes that are not UTF-8
        raise ValueError("not valid JSON (not UTF-8)") from None


# Where a lone surrogate may come from: a `\uD800`-`\uDFFF` escape (a pair makes one
# character, which `_LONE_SURROGATE` does not match).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _may_hold_lone_surrogates(raw: bytes | str) -> bool:
    if isinstance(raw, str):
        return _SURROGATE_ESCAPE.search(raw) is not None
    # UTF-16 and UTF-32 JSON (json.loads reads them too) hold NULs: looked at as text
    return b"\0" in raw or _SURROGATE_ESCAPE_BYTES.search(raw) is not None


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value


def _check_activity_id(activity_id: str, what: str, max_length: int | None) -> None:
    if max_length is not None and len(activity_id) > max_length:
        raise MessageError(
            f"invalid {what}: activityId: longer than {max_length} characters"
            " (update_agent.max_activity_id_length)",
            None,
        )


def decode(
    raw: bytes | str,
    payload_type: type[PayloadT],
    what: str,
    *,
    max_size: int | None = None,
    max_activity_id: int | None = None,
) -> Envelope[PayloadT]:
    """Parse an incoming envelope. Raises MessageError (with the activityId if readable).

    `what` names the message in errors, e.g. "desired state". `max_size` (bytes) and
    `max_activity_id` (characters) are the agent's limits; an activityId over its limit
    counts as unreadable (a reply would echo it).
    """
    if max_size is not None and len(raw) > max_size:
        activity_id = read_member(raw, ("activityId",))
        if activity_id is not None:
            _check_activity_id(activity_id, what, max_activity_id)
        raise MessageError(
            f"invalid {what}: the message is larger than {max_size} bytes"
            " (update_agent.max_message_size)",
            activity_id,
        )
    try:
        data = load_json(raw)
    except ValueError as exc:
        activity_id = read_member(raw, ("activityId",))
        if activity_id is not None:
            _check_activity_id(activity_id, what, max_activity_id)
        raise MessageError(f"invalid {what}: {exc}", activity_id) from None
    return decode_object(data, payload_type, what, max_activity_id=max_activity_id)


def decode_object(
    data: Any, payload_type: type[PayloadT], what: str, *, max_activity_id: int | None = None
) -> Envelope[PayloadT]:
    """`decode()` of a message already parsed by `load_json`."""
    if not isinstance(data, dict):
        raise MessageError(f"invalid {what}: the message is not a JSON object", None)
    activity_id = data.get("activityId")
    readable_id = activity_id if isinstance(activity_id, str) else None
    if activity_id is not None and not isinstance(activity_id, str):
        raise MessageError(f"invalid {what}: activityId: must be a string", None)
    if readable_id is not None:
        _check_activity_id(readable_id, what, max_activity_id)
    timestamp = data.get("timestamp", 0)
    if timestamp is None:
        timestamp = 0
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int | float)
        or not _INT64_MIN <= timestamp <= _INT64_MAX  # also false for NaN
    ):
        raise MessageError(f"invalid {what}: timestamp: must be an integer", readable_id)
    payload_data = data.get("payload")
    payload: PayloadT | None = None
    if payload_data is not None:
        try:
            payload = payload_type.model_validate(payload_data)
        except Invalid as exc:
            raise MessageError(
                f"invalid {what}: {describe_validation_error(exc, data=payload_data)}",
                readable_id,
            ) from None
        except RecursionError:
            raise MessageError(f"invalid {what}: nested too deeply", readable_id) from None
    return Envelope(activity_id=readable_id or "", timestamp=int(timestamp), payload=payload)


# --- reading one member of a message that cannot be decoded -------------------------------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _after_whitespace(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return pos if match is None else match.end()


_SCALAR = re.compile(r"[^,}\]\s]*")
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _skip_value(text: str, pos: int) -> int:
    """The end of the JSON value at `pos`, found without building it (any depth, linear)."""
    first = text[pos : pos + 1]
    if first == '"':
        return int(scanstring(text, pos + 1)[1])
    if first not in ("{", "["):
        match = _SCALAR.match(text, pos)
        assert match is not None  # the pattern matches the empty string
        if match.end() == pos:
            raise ValueError("no value")
        return match.end()
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text, pos):
        mark = token.group()
        if mark in ("{", "["):
            depth += 1
        elif mark in ("}", "]"):
            depth -= 1
            if depth == 0:
                return token.end()
    raise ValueError("unterminated value")


def _read_object(text: str, pos: int, path: Sequence[str]) -> str | None:
    """The string at `path` inside the object at `pos` (the last occurrence, as json.loads)."""
    found: str | None = None
    pos = _after_whitespace(text, pos + 1)
    if text[pos : pos + 1] == "}":
        return None
    while True:
        if text[pos : pos + 1] != '"':
            raise ValueError("expected a key")
        key, pos = scanstring(text, pos + 1)
        pos = _after_whitespace(text, pos)
        if text[pos : pos + 1] != ":":
            raise ValueError("expected ':'")
        pos = _after_whitespace(text, pos + 1)
        if key == path[0]:
            found = None
            if len(path) == 1 and text[pos : pos + 1] == '"':
                found = scanstring(text, pos + 1)[0]
            elif len(path) > 1 and text[pos : pos + 1] == "{":
                found = _read_object(text, pos, path[1:])
        pos = _after_whitespace(text, _skip_value(text, pos))
        separator = text[pos : pos + 1]
        if separator == "}":
            return found
        if separator != ",":
            raise ValueError("expected ',' or '}'")
        pos = _after_whitespace(text, pos + 1)


def read_member(raw: bytes | str, path: Sequence[str]) -> str | None:
    """The string at `path` (e.g. `("payload", "command")`) of a JSON object, read even when
    the rest of the message is not valid (too deep, NaN, huge numbers, wrong types): the
    objects on the path must be well formed, the other values are skipped unread. None when
    it cannot be read. A lone surrogate in it is U+FFFD, as `load_json` reads it."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        pos = _after_whitespace(text, 0)
        if text[pos : pos + 1] != "{":
            return None
        found = _read_object(text, pos, path)
        return None if found is None else _LONE_SURROGATE.sub("\ufffd", found)
    except (ValueError, IndexError):  # UnicodeDecodeError and JSONDecodeError too
        return None
