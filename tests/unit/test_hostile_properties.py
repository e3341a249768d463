"""Hostile input, as properties: whatever bytes arrive, decode -> parse -> plan raises
nothing but its typed validation errors (MessageError, DesiredStateError/PlanError)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cua.api.envelope import MessageError, decode, read_member
from cua.api.models import DesiredState, DesiredStateCommand
from cua.containers.errors import DesiredStateError
from cua.containers.parse import (
    KEY_SYSTEM_CONTAINERS,
    MULTI_VALUED_KEYS,
    SINGLE_VALUED_KEYS,
    parse_desired_state,
)
from cua.containers.spec import ContainerSpec
from cua.containers.state import ContainerStatus
from cua.settings import Limits, Manage
from cua.update.plan import CurrentContainer, make_plan

pytestmark = pytest.mark.unit

DOMAIN = "containers"
LIMITS = Limits(max_message_size=256 * 1024, max_activity_id_length=64, max_components=20)

# Values that once raised (or could): huge numbers, signs, dots, separators, control text.
_NASTY = st.sampled_from(
    [
        "9" * 5000,
        "-" + "9" * 5000,
        "0" * 5000 + "1",
        "1e400",
        "NaN",
        "Infinity",
        "-1",
        "x/../get?names=y",
        "a\nb",
        "\x00",
        "\ud800",
        "::",
        "1:2:3:4",
        "a:b/c",
        "1-2:3/udp",
        "[::1]:80:80",
        "100M",
        "1.2.3M",
        ":" * 100,
        "/dev/x:/dev/y:rwmx",
    ]
)
_TEXT = st.text(max_size=30) | _NASTY
_KEYS = st.sampled_from(
    sorted(MULTI_VALUED_KEYS | SINGLE_VALUED_KEYS | {KEY_SYSTEM_CONTAINERS, "status", "x"})
)
_PAIR = st.fixed_dictionaries({"key": _KEYS | _TEXT, "value": _TEXT})
_COMPONENT = st.fixed_dictionaries(
    {"id": st.sampled_from(["app", "db", "A", "-x", ""]) | _TEXT, "version": _TEXT},
    optional={"config": st.lists(_PAIR, max_size=12)},
)
_DESIRED = st.fixed_dictionaries(
    {
        "domains": st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.sampled_from([DOMAIN, "other"]) | _TEXT,
                    "components": st.lists(_COMPONENT, max_size=25),
                },
                optional={"config": st.lists(_PAIR, max_size=3)},
            ),
            min_size=0,
            max_size=2,
        )
    },
    optional={
        "baselines": st.lists(
            st.fixed_dictionaries(
                {"title": _TEXT, "components": st.lists(st.just(f"{DOMAIN}:app") | _TEXT)}
            ),
            max_size=3,
        )
    },
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=15,
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """An envelope around a desired-state-like payload, then maybe broken as bytes."""
    payload: Any = draw(_DESIRED | _JSON)
    activity_id: Any = draw(_TEXT | st.none() | st.integers() | st.just("y" * 100))
    envelope = {"activityId": activity_id, "timestamp": draw(st.integers() | _JSON)}
    envelope["payload"] = payload
    raw = json.dumps(envelope).encode("utf-8", "surrogatepass")
    cut = draw(st.sampled_from(["none", "none", "truncate", "constant", "deep", "digits"]))
    if cut == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif cut == "constant":
        raw = raw.replace(b'"timestamp": ', b'"timestamp": NaN, "x": ', 1)
    elif cut == "deep":
        raw = raw[:-1] + b', "deep": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    elif cut == "digits":
        raw = raw.replace(b'"timestamp": ', b'"timestamp": ' + b"7" * 5000 + b', "y": ', 1)
    return raw


_CURRENT = [
    CurrentContainer(
        id="id-app",
        name="app",
        image="app:1",
        version="1",
        status=ContainerStatus.RUNNING,
        managed=True,
        spec=ContainerSpec(name="app", image="app:1"),
    ),
    CurrentContainer(
        id="id-other",
        name="db",
        image="db:1",
        version="1",
        status=ContainerStatus.EXITED,
        managed=False,
    ),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.booleans(), st.sampled_from(Manage))
def test_decode_parse_plan_raise_only_typed_errors(
    raw: bytes, strict: bool, manage: Manage
) -> None:
    try:
        envelope = decode(
            raw,
            DesiredState,
            "desired state",
            max_size=LIMITS.max_message_size,
            max_activity_id=LIMITS.max_activity_id_length,
        )
    except MessageError as error:
        failed_id = error.activity_id
        assert failed_id is None or len(failed_id) <= LIMITS.max_activity_id_length
        return
    try:
        parsed = parse_desired_state(
            envelope.payload or DesiredState(),
            DOMAIN,
            strict=strict,
            max_components=LIMITS.max_components,
        )
        plan = make_plan(parsed, _CURRENT, domain=DOMAIN, manage=manage, system_containers=("sys",))
    except DesiredStateError:  # PlanError too
        return
    assert len(plan.actions) <= LIMITS.max_components + len(_CURRENT)


@settings(max_examples=120, deadline=None)
@given(messages())
def test_a_readable_activity_id_is_never_lost(raw: bytes) -> None:
    """When the envelope's activityId can be read, a failure carries it (to be answered)."""
    readable = read_member(raw, ("activityId",))
    try:
        decoded: str | None = decode(raw, DesiredStateCommand, "command").activity_id
    except MessageError as error:
        decoded = error.activity_id
    assert readable is None or decoded == readable
