"""Labels on our containers: lossless spec round trip, tolerant decoding."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cua.containers.labels import (
    LABEL_COMPONENT_ID,
    LABEL_COMPONENT_VERSION,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_SCHEMA,
    LABEL_SPEC,
    LabelledSpec,
    decode_labels,
    encode_labels,
    is_managed,
    spec_from_json,
    spec_to_json,
)
from cua.containers.parse import parse_component
from cua.containers.spec import (
    ContainerSpec,
    DeviceMapping,
    LogConfig,
    LogDriver,
    LogMode,
    MountPoint,
    NetworkMode,
    PortMapping,
    ProcessConfig,
    Propagation,
    Resources,
    RestartPolicy,
    RestartPolicyType,
)
from tests.builders import component

pytestmark = pytest.mark.unit

PARSED = parse_component(
    component(
        "web",
        "1.2",
        image="registry:5000/web:1.2",
        env="TOKEN=s3cr3t",
        port="127.0.0.1:80-90:8080/udp",
        memory="200M",
        restartPolicy="on-failure",
        restartTimeout="30",
        logPath="/logs",
    )
)


def test_encode_labels() -> None:
    labels = encode_labels(PARSED)
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_SCHEMA] == "1"
    assert labels[LABEL_COMPONENT_ID] == "web"
    assert labels[LABEL_COMPONENT_VERSION] == "1.2"
    assert labels[LABEL_IMAGE] == "registry:5000/web:1.2"
    assert spec_from_json(labels[LABEL_SPEC]) == PARSED.spec
    assert " " not in labels[LABEL_SPEC].replace("s3cr3t", "")  # compact
    assert all(key.startswith("io.cua.") for key in labels)


def test_decode_round_trip() -> None:
    assert decode_labels(encode_labels(PARSED)) == LabelledSpec(
        component_id="web", version="1.2", image_as_given="registry:5000/web:1.2", spec=PARSED.spec
    )


def test_not_ours() -> None:
    assert decode_labels({}) is None
    assert decode_labels({"maintainer": "x"}) is None
    assert decode_labels({LABEL_MANAGED: "false"}) is None
    assert not is_managed({LABEL_MANAGED: "yes"})
    assert is_managed({LABEL_MANAGED: "true"})


@pytest.mark.parametrize(
    "damage",
    [
        {LABEL_SPEC: "{"},
        {LABEL_SPEC: "[]"},
        {LABEL_SPEC: '{"name":"web"}'},
        {LABEL_SPEC: "[" * 5000 + "]" * 5000},
        {LABEL_SCHEMA: "2"},
        {LABEL_IMAGE: None},
    ],
)
def test_corrupt_labels_give_none_and_a_warning(
    damage: dict[str, str | None], caplog: pytest.LogCaptureFixture
) -> None:
    labels: dict[str, str] = dict(encode_labels(PARSED))
    for key, value in damage.items():
        if value is None:
            del labels[key]
        else:
            labels[key] = value
    with caplog.at_level(logging.WARNING, logger="cua.containers.labels"):
        assert decode_labels(labels) is None
    assert "treated as unlabelled" in caplog.text
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize(
    "field",
    ["network", "restart", "log", "mounts", "devices", "ports", "privileged", "config"],
)
def test_wrong_types_in_spec_json_are_rejected(field: str) -> None:
    data = json.loads(spec_to_json(PARSED.spec))
    data[field] = {"bogus": 1} if field != "privileged" else "yes"
    with pytest.raises(ValueError, match=r"not a container spec|is not a valid"):
        spec_from_json(json.dumps(data))


_text = st.text(max_size=12)
_specs = st.builds(
    ContainerSpec,
    name=_text,
    image=_text,
    host_name=_text,
    domain_name=_text,
    config=st.none()
    | st.builds(
        ProcessConfig, env=st.lists(_text, max_size=3).map(tuple), cmd=st.lists(_text).map(tuple)
    ),
    devices=st.lists(st.builds(DeviceMapping, _text, _text, _text), max_size=2).map(tuple),
    ports=st.lists(
        st.builds(
            PortMapping,
            host_port=st.integers(0, 65535),
            container_port=st.integers(0, 65535),
            host_port_end=st.integers(0, 65535),
            host_ip=_text,
            protocol=_text,
        ),
        max_size=2,
    ).map(tuple),
    mounts=st.lists(
        st.builds(MountPoint, _text, _text, st.sampled_from(Propagation)), max_size=2
    ).map(tuple),
    extra_hosts=st.lists(_text, max_size=2).map(tuple),
    network=st.sampled_from(NetworkMode),
    privileged=st.booleans(),
    terminal=st.booleans(),
    interactive=st.booleans(),
    restart=st.builds(
        RestartPolicy, st.sampled_from(RestartPolicyType), st.integers(), st.integers()
    ),
    log=st.builds(
        LogConfig,
        st.sampled_from(LogDriver),
        st.integers(),
        _text,
        _text,
        st.sampled_from(LogMode),
        _text,
    ),
    resources=st.none() | st.builds(Resources, _text, _text, _text),
)


@given(_specs)
def test_spec_json_round_trip_is_lossless(spec: ContainerSpec) -> None:
    text = spec_to_json(spec)
    assert spec_from_json(text) == spec
    assert spec_to_json(spec_from_json(text)) == text  # deterministic


@given(st.dictionaries(st.sampled_from([LABEL_MANAGED, LABEL_SCHEMA, LABEL_COMPONENT_ID,
                                        LABEL_COMPONENT_VERSION, LABEL_IMAGE, LABEL_SPEC, "x"]),
                       st.text(max_size=30)))  # fmt: skip
def test_decode_never_raises(labels: dict[str, str]) -> None:
    result = decode_labels(labels)
    assert result is None or is_managed(labels)
