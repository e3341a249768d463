"""The envelope codec (spec §1.4, §4.4): Kanto's bytes out, tolerant but precise in."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cua.api.envelope import (
    Envelope,
    MessageError,
    decode,
    encode,
    encode_feedback,
    go_json,
    load_json,
    read_member,
)
from cua.api.models import (
    Action,
    ActionStatusType,
    Component,
    DesiredState,
    DesiredStateCommand,
    DesiredStateFeedback,
    Inventory,
    KeyValuePair,
    SoftwareNode,
    SoftwareType,
    StatusType,
)

pytestmark = pytest.mark.unit

HELLO = Component(id="containers:hello-world", version="latest")


def _action(status: ActionStatusType, message: str) -> Action:
    return Action(component=HELLO, status=status, message=message)


def test_section_1_4_identifying_bytes() -> None:
    raw = encode("4ece8fb4-...", DesiredStateFeedback(status=StatusType.IDENTIFYING), 1752829700076)
    assert raw == (
        b'{"activityId":"4ece8fb4-...","timestamp":1752829700076,'
        b'"payload":{"status":"IDENTIFYING"}}'
    )


def test_section_1_4_identified_bytes() -> None:
    feedback = DesiredStateFeedback(
        status=StatusType.IDENTIFIED,
        actions=[
            _action(ActionStatusType.IDENTIFIED, "New container will be created and started.")
        ],
    )
    assert encode("4ece8fb4-...", feedback, 1752829700076) == (
        b'{"activityId":"4ece8fb4-...","timestamp":1752829700076,"payload":{"status":"IDENTIFIED",'
        b'"actions":[{"component":{"id":"containers:hello-world","version":"latest"},'
        b'"status":"IDENTIFIED","message":"New container will be created and started."}]}}'
    )


def test_section_1_4_current_state_bytes() -> None:
    inventory = Inventory(
        software_nodes=[
            SoftwareNode(
                id="containers-update-agent",
                version="1.0.0",
                name="Eclipse Kanto Containers Update Agent",
                parameters=[KeyValuePair(key="domain", value="containers")],
                type=SoftwareType.APPLICATION,
            )
        ]
    )
    assert encode("initial-current-state-1745576976829", inventory, 1745576976830) == (
        b'{"activityId":"initial-current-state-1745576976829","timestamp":1745576976830,'
        b'"payload":{"softwareNodes":[{"id":"containers-update-agent","version":"1.0.0",'
        b'"name":"Eclipse Kanto Containers Update Agent",'
        b'"parameters":[{"key":"domain","value":"containers"}],"type":"APPLICATION"}]}}'
    )


H = '{"id":"containers:hello-world","version":"latest"}'
CREATE_MSG = "New container will be created and started."
STARTED_MSG = "New container instance is started."


@pytest.mark.parametrize(
    ("feedback", "payload"),
    [
        (
            DesiredStateFeedback(
                status=StatusType.DOWNLOADING,
                actions=[_action(ActionStatusType.DOWNLOADING, CREATE_MSG)],
            ),
            '{"status":"DOWNLOADING","actions":[{"component":'
            + H
            + ',"status":"DOWNLOADING","message":"New container will be created and started."}]}',
        ),
        (
            DesiredStateFeedback(
                status=StatusType.DOWNLOAD_SUCCESS,
                actions=[_action(ActionStatusType.DOWNLOAD_SUCCESS, "New container created.")],
            ),
            '{"status":"DOWNLOAD_SUCCESS","actions":[{"component":'
            + H
            + ',"status":"DOWNLOAD_SUCCESS","message":"New container created."}]}',
        ),
        (
            DesiredStateFeedback(
                status=StatusType.UPDATE_SUCCESS,
                actions=[_action(ActionStatusType.DOWNLOAD_SUCCESS, "New container created.")],
            ),
            '{"status":"UPDATE_SUCCESS","actions":[{"component":'
            + H
            + ',"status":"DOWNLOAD_SUCCESS","message":"New container created."}]}',
        ),
        (
            DesiredStateFeedback(
                status=StatusType.ACTIVATING,
                actions=[_action(ActionStatusType.ACTIVATING, "New container created.")],
            ),
            '{"status":"ACTIVATING","actions":[{"component":'
            + H
            + ',"status":"ACTIVATING","message":"New container created."}]}',
        ),
        (
            DesiredStateFeedback(
                status=StatusType.ACTIVATION_SUCCESS,
                actions=[
                    _action(
                        ActionStatusType.ACTIVATION_SUCCESS, "New container instance is started."
                    )
                ],
            ),
            '{"status":"ACTIVATION_SUCCESS","actions":[{"component":'
            + H
            + ',"status":"ACTIVATION_SUCCESS","message":"New container instance is started."}]}',
        ),
    ],
)
def test_section_4_4_payloads(feedback: DesiredStateFeedback, payload: str) -> None:
    raw = encode("A", feedback, 7)
    assert raw == b'{"activityId":"A","timestamp":7,"payload":' + payload.encode() + b"}"


def test_section_4_4_desired_state_round_trips_byte_for_byte() -> None:
    text = (
        '{"activityId":"A","timestamp":5,"payload":{"domains":[{"id":"containers","components":'
        '[{"id":"hello-world","version":"latest","config":[{"key":"image","value":'
        '"docker.io/library/hello-world:latest"}]}]}]}}'
    )
    envelope = decode(text, DesiredState, "desired state")
    assert encode(envelope.activity_id, envelope.payload, envelope.timestamp) == text.encode()


def test_all_three_keys_always_present() -> None:
    assert encode("", None, 0) == b'{"activityId":"","timestamp":0,"payload":null}'
    assert json.loads(encode("x", DesiredStateFeedback()))["payload"] == {}


def test_timestamp_defaults_to_now_in_milliseconds() -> None:
    stamp = json.loads(encode("x", None))["timestamp"]
    assert isinstance(stamp, int)
    assert stamp > 1_600_000_000_000


def test_go_html_escapes_and_raw_utf8() -> None:
    assert go_json({"m": "<a&b> ü \u2028"}) == '{"m":"\\u003ca\\u0026b\\u003e ü \\u2028"}'.encode()


def test_lone_surrogate_becomes_replacement_character() -> None:
    value = json.loads('"x\\ud800y"')
    assert go_json(value) == '"x\ufffdy"'.encode()


def test_decode_leda_get_state_without_payload() -> None:
    envelope = decode(
        '{"activityId":"current-state-test-json","timestamp":1676332092}', Inventory, "request"
    )
    assert envelope.activity_id == "current-state-test-json"
    assert envelope.timestamp == 1676332092
    assert envelope.payload is None


def test_decode_missing_timestamp_and_null_fields() -> None:
    envelope = decode(
        '{"activityId":"a","payload":{"command":"DOWNLOAD","baseline":null}}',
        DesiredStateCommand,
        "command",
    )
    assert envelope.timestamp == 0
    assert envelope.payload == DesiredStateCommand(command="DOWNLOAD")


def test_decode_ignores_unknown_fields() -> None:
    envelope = decode(
        '{"activityId":"a","extra":1,"payload":{"domains":[],"what":true}}',
        DesiredState,
        "desired state",
    )
    assert envelope.payload == DesiredState()


@pytest.mark.parametrize(
    ("raw", "message", "activity_id"),
    [
        ("{", "invalid desired state: not valid JSON at line 1 column 2", None),
        ("[1]", "invalid desired state: the message is not a JSON object", None),
        ('{"activityId":5}', "invalid desired state: activityId: must be a string", None),
        (
            '{"activityId":"a","timestamp":"x"}',
            "invalid desired state: timestamp: must be an integer",
            "a",
        ),
        (
            '{"activityId":"a","payload":{"domains":[{"id":"containers","components":'
            '[{"id":"x","config":[{"key":"env","value":5}]}]}]}}',
            "invalid desired state: payload.domains[0].components[0].config[0].value "
            '(component "x", key "env"): Input should be a valid string',
            "a",
        ),
        (
            '{"activityId":"a","payload":{"domains":[{"id":"containers","components":'
            '[{"id":"web","config":[{"key":"image","value":"i"},'
            '{"key":"restartPolicy","value":5}]}]}]}}',
            "invalid desired state: payload.domains[0].components[0].config[1].value "
            '(component "web", key "restartPolicy"): Input should be a valid string',
            "a",
        ),
        (
            '{"activityId":"a","payload":{"domains":[{"id":"containers","components":'
            '[{"id":"web","version":1}]}]}}',
            "invalid desired state: payload.domains[0].components[0].version: "
            "Input should be a valid string",
            "a",
        ),
    ],
)
def test_decode_errors_name_the_place_not_the_value(
    raw: str, message: str, activity_id: str | None
) -> None:
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state")
    assert str(caught.value) == message
    assert caught.value.activity_id == activity_id


def test_decode_error_never_echoes_a_secret_value() -> None:
    raw = '{"activityId":"a","payload":{"domains":[{"id":{"secret":"hunter2"}}]}}'
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state")
    assert "hunter2" not in str(caught.value)


def _decode(raw: bytes | str) -> Envelope[DesiredState] | MessageError:
    """The envelope, or the one exception decode may raise."""
    try:
        return decode(raw, DesiredState, "desired state")
    except MessageError as exc:
        return exc


@given(st.binary(max_size=200))
def test_decode_of_junk_raises_only_message_error(raw: bytes) -> None:
    outcome = _decode(raw)
    if isinstance(outcome, MessageError):
        assert str(outcome).startswith("invalid desired state: ")
    else:
        assert isinstance(json.loads(raw), dict)  # only a JSON object is an envelope
        assert outcome.payload is None or isinstance(outcome.payload, DesiredState)


SECRET = "hunter2"
_text = st.text(max_size=8) | st.just(SECRET)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
_pairs = st.lists(st.fixed_dictionaries({"key": _text, "value": _text | _json}), max_size=2)
_desired_states = st.fixed_dictionaries(
    {
        "domains": st.lists(
            st.fixed_dictionaries(
                {"id": _text, "components": st.lists(
                    # A component id is named in errors, as in every feedback action: it is
                    # an identifier, never a secret, so the secret is not drawn for it.
                    st.fixed_dictionaries(
                        {"id": st.text(max_size=8), "version": _text, "config": _pairs}
                    ),
                    max_size=2,
                )}
            ),
            max_size=2,
        )
    }
)  # fmt: skip
_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "activityId": _text | _json,
        "timestamp": st.integers() | st.integers(min_value=2**63 - 2, max_value=2**63) | _json,
        "payload": _desired_states | _json,
        "extra": _json,
    },
)


@given(_envelopes)
def test_decode_of_any_envelope(message: dict[str, Any]) -> None:
    activity = message.get("activityId")
    stamp = message.get("timestamp")
    payload = message.get("payload")
    id_ok = activity is None or isinstance(activity, str)
    stamp_ok = stamp is None or (
        isinstance(stamp, int | float)
        and not isinstance(stamp, bool)
        and -(2**63) <= stamp <= 2**63 - 1  # Go's int64
    )
    envelope = _decode(json.dumps(message))
    if isinstance(envelope, MessageError):
        text = str(envelope)
        assert SECRET not in text
        assert envelope.activity_id == (activity if isinstance(activity, str) else None)
        # Only the first problem is named, in the order activityId, timestamp, payload.
        if not id_ok:
            assert text == "invalid desired state: activityId: must be a string"
        elif not stamp_ok:
            assert text == "invalid desired state: timestamp: must be an integer"
        else:
            assert text.startswith("invalid desired state: payload")
            assert payload is not None
    else:
        assert id_ok
        assert stamp_ok
        assert envelope.activity_id == (activity or "")
        assert envelope.timestamp == int(stamp or 0)
        if payload is None:
            assert envelope.payload is None
        else:
            assert envelope.payload is not None
            assert isinstance(payload, dict)
            assert [d.id for d in envelope.payload.domains] == [
                d["id"] for d in payload.get("domains") or []
            ]


@given(st.text(max_size=50), st.integers(min_value=0, max_value=2**62))
def test_encode_is_valid_json_with_the_same_id(activity_id: str, stamp: int) -> None:
    data = json.loads(encode(activity_id, None, stamp))
    assert list(data) == ["activityId", "timestamp", "payload"]
    assert data["timestamp"] == stamp


# --- hostile input: every failure is a MessageError, with the activityId when readable -------

DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"activityId":"a","timestamp":NaN}', "not valid JSON (NaN is not JSON)"),
        ('{"activityId":"a","timestamp":Infinity}', "not valid JSON (Infinity is not JSON)"),
        ('{"activityId":"a","timestamp":-Infinity}', "not valid JSON (-Infinity is not JSON)"),
        ('{"activityId":"a","timestamp":1e400}', "timestamp: must be an integer"),
        ('{"activityId":"a","timestamp":' + "9" * 5000 + "}", "timestamp: must be an integer"),
        ('{"activityId":"a","timestamp":99999999999999999999}', "timestamp: must be an integer"),
        ('{"activityId":"a","payload":' + DEEP + "}", "nested too deeply"),
        ('{"payload":' + DEEP + ',"activityId":"a"}', "nested too deeply"),
        ('{"activityId":"a","payload":{"domains":[{"x":' + DEEP + "}]}}", "nested too deeply"),
        ('{"activityId":"a","payload":{"domains":' + "9" * 5000 + "}}", "payload.domains"),
        ('{"activityId":"a", "payload": {"x": NaN}}', "not valid JSON (NaN is not JSON)"),
    ],
)
def test_hostile_values_are_message_errors_with_the_activity_id(raw: str, message: str) -> None:
    with pytest.raises(MessageError) as caught:
        decode(raw, DesiredState, "desired state")
    assert str(caught.value).startswith(f"invalid desired state: {message}")
    assert caught.value.activity_id == "a"


def test_limits_are_named_in_the_error() -> None:
    big = go_json({"activityId": "a", "payload": {"domains": [], "x": "y" * 100}})
    with pytest.raises(MessageError) as caught:
        decode(big, DesiredState, "desired state", max_size=100)
    assert str(caught.value) == (
        "invalid desired state: the message is larger than 100 bytes"
        " (update_agent.max_message_size)"
    )
    assert caught.value.activity_id == "a"
    long_id = go_json({"activityId": "x" * 11, "payload": None})
    with pytest.raises(MessageError) as caught:
        decode(long_id, DesiredState, "desired state", max_activity_id=10)
    assert str(caught.value) == (
        "invalid desired state: activityId: longer than 10 characters"
        " (update_agent.max_activity_id_length)"
    )
    assert caught.value.activity_id is None  # a reply would echo it
    assert decode(long_id, DesiredState, "d", max_activity_id=11).activity_id == "x" * 11


@pytest.mark.parametrize(
    ("raw", "path", "value"),
    [
        ('{"activityId":"a"}', ("activityId",), "a"),
        (' { "x" : [1, {"activityId": "no"}] , "activityId" : "a\\n\\"b" } ', ("activityId",),
         'a\n"b'),
        ('{"activityId":"a","activityId":"b"}', ("activityId",), "b"),
        ('{"payload":{"command":"UPDATE","x":NaN},"activityId":5}', ("payload", "command"),
         "UPDATE"),
        ('{"payload":' + DEEP + ',"activityId":"a"}', ("activityId",), "a"),
        ('{"activityId":null}', ("activityId",), None),
        ('{"activityId":"a"', ("activityId",), None),
        ('{"activityId":"a" "x":1}', ("activityId",), None),
        ("[]", ("activityId",), None),
        (b'{"activityId":"\xff"}', ("activityId",), None),
    ],
)  # fmt: skip
def test_read_member_of_a_broken_message(
    raw: str | bytes, path: tuple[str, ...], value: str | None
) -> None:
    assert read_member(raw, path) == value


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    ),
    st.text(),
)
def test_read_member_agrees_with_json(value: object, activity_id: str) -> None:
    raw = json.dumps({"x": value, "activityId": activity_id, "y": value})
    assert read_member(raw, ("activityId",)) == activity_id


@given(st.binary(max_size=300) | st.text(alphabet='{}[]":,ae1.-NIa ', max_size=300))
def test_read_member_never_raises(raw: bytes | str) -> None:
    assert read_member(raw, ("payload", "command")) is None or isinstance(
        read_member(raw, ("payload", "command")), str
    )


_actions = st.builds(
    Action,
    component=st.none() | st.builds(Component, id=st.text(max_size=8), version=st.text(max_size=4)),
    status=st.none() | st.sampled_from(ActionStatusType),
    progress=st.integers(min_value=0, max_value=255),
    message=st.text(max_size=20),
)


@given(
    st.builds(
        DesiredStateFeedback,
        baseline=st.text(max_size=5),
        status=st.none() | st.sampled_from(StatusType),
        message=st.text(max_size=20),
        actions=st.lists(_actions, max_size=6),
    ),
    st.text(max_size=10),
)
def test_encode_feedback_writes_the_bytes_of_encode(
    feedback: DesiredStateFeedback, activity_id: str
) -> None:
    assert encode_feedback(activity_id, feedback, 17) == encode(activity_id, feedback, 17)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (rb'{"\ud800": "a\udfff"}', {"\ufffd": "a\ufffd"}),
        (rb'{"k": ["\uD83D\uDE00", "\udc00x"]}', {"k": ["\U0001f600", "\ufffdx"]}),
        ('{"k": "\\ud800"}'.encode("utf-16"), {"k": "\ufffd"}),
        ('{"\\ud800": 1}', {"\ufffd": 1}),
    ],
)
def test_a_lone_surrogate_escape_decodes_to_the_replacement_character_as_in_go(
    raw: bytes | str, expected: Any
) -> None:
    assert load_json(raw) == expected


def test_a_command_with_a_lone_surrogate_key_decodes_its_unknown_key_ignored() -> None:
    """Found by the hostile-input property: msgspec cannot look a lone surrogate key up
    (UnicodeEncodeError); Kanto reads it as U+FFFD, an unknown key."""
    raw = b'{"activityId": "a", "timestamp": 0, "payload": {"\\ud800": false}}'
    envelope = decode(raw, DesiredStateCommand, "desired state command")
    assert envelope.activity_id == "a"
    assert envelope.payload == DesiredStateCommand()


def test_an_activity_id_read_from_a_broken_message_has_its_lone_surrogate_replaced() -> None:
    """The same text as the decoder's (U+FFFD), so a failure answers the same activityId."""
    raw = b'{"activityId": "a\\ud800", "timestamp": NaN}'
    assert read_member(raw, ("activityId",)) == "a\ufffd"
    with pytest.raises(MessageError) as caught:
        decode(b'{"activityId": "a\\ud800", "timestamp": "x"}', DesiredStateCommand, "c")
    assert caught.value.activity_id == "a\ufffd"
