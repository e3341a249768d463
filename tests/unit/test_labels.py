"""Labels on our containers: lossless spec round trip, tolerant decoding."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cua.containers import labels as labels_module
from cua.containers.gosyntax import UNLIMITED, Size
from cua.containers.labels import (
    LABEL_COMPONENT_ID,
    LABEL_COMPONENT_VERSION,
    LABEL_DOMAIN,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_SCHEMA,
    LABEL_SPEC,
    LEGACY_DOMAIN,
    LabelledSpec,
    decode_labels,
    encode_labels,
    inherited_from_image,
    is_managed,
    label_domain,
    owner,
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
    labels = encode_labels(PARSED, "cars")
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_DOMAIN] == "cars"
    assert labels[LABEL_SCHEMA] == "1"
    assert labels[LABEL_COMPONENT_ID] == "web"
    assert labels[LABEL_COMPONENT_VERSION] == "1.2"
    assert labels[LABEL_IMAGE] == "registry:5000/web:1.2"
    assert spec_from_json(labels[LABEL_SPEC]) == PARSED.spec
    assert " " not in labels[LABEL_SPEC].replace("s3cr3t", "")  # compact
    assert all(key.startswith("io.cua.") for key in labels)


def test_decode_round_trip() -> None:
    assert decode_labels(encode_labels(PARSED, "cars")) == LabelledSpec(
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
    labels: dict[str, str] = dict(encode_labels(PARSED, "cars"))
    for key, value in damage.items():
        if value is None:
            del labels[key]
        else:
            labels[key] = value
    with caplog.at_level(logging.WARNING, logger="cua.containers.labels"):
        assert decode_labels(labels) is None
    assert "treated as unlabelled" in caplog.text
    assert "s3cr3t" not in caplog.text


# A spec label as earlier versions wrote it (sizes were kept as their text only).
_EARLIER_LABEL = (
    '{"name":"web","image":"img:1","hostName":"web-host","domainName":"web-domain",'
    '"config":null,"devices":[],"ports":[],"mounts":[],"extraHosts":[],"network":"bridge",'
    '"privileged":false,"terminal":false,"interactive":false,"restart":["unless-stopped",0,0],'
    '"log":["json-file",2,"1.5m","","non-blocking","5k"],"resources":["200 m","100M","-1"]}'
)


def test_a_label_of_an_earlier_version_gives_sizes_with_their_text_and_bytes() -> None:
    spec = spec_from_json(_EARLIER_LABEL)
    assert spec.log.max_size == Size("1.5m", 1536 * 1024)
    assert spec.log.max_buffer_size == Size("5k", 5 * 1024)
    assert spec.resources is not None
    assert spec.resources.memory == Size("200 m", 200 * 1024**2)
    assert spec.resources.memory_reservation == Size("100M", 100 * 1024**2)
    assert spec.resources.memory_swap is UNLIMITED
    assert spec_to_json(spec) == _EARLIER_LABEL  # written back exactly


def test_an_unreadable_size_in_a_label_is_not_a_spec() -> None:
    with pytest.raises(ValueError, match="invalid size '1x'"):
        spec_from_json(_EARLIER_LABEL.replace('"1.5m"', '"1x"'))


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
# Sizes as a config gives them (any text Kanto accepts, kept as written) or read from an
# engine (the shortest exact text of a byte count).
_sizes = (
    st.none()
    | st.just(UNLIMITED)
    | st.sampled_from(["200 m", "1.5g", "100M", "0.5k"]).map(Size.parse)
    | st.integers(1, 2**50).map(Size.from_bytes)
)
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
        _sizes,
        _text,
        st.sampled_from(LogMode),
        _sizes,
    ),
    resources=st.none() | st.builds(Resources, _sizes, _sizes, _sizes),
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


# --- ownership: the domain, and labels that come from the image --------------------------


def test_the_owner_is_the_domain_the_labels_name() -> None:
    labels = encode_labels(PARSED, "cars")
    assert owner(labels, {}) == "cars"
    assert owner(encode_labels(PARSED, "trucks"), {}) == "trucks"
    assert owner({}, {}) is None
    assert owner({"maintainer": "x"}, {"maintainer": "x"}) is None
    assert owner({LABEL_MANAGED: "false", LABEL_DOMAIN: "cars"}, {}) is None


def test_ownership_labels_copied_from_the_image_do_not_count() -> None:
    """Docker copies an image's LABELs onto its containers: an image labelled like one of
    our containers makes containers that no agent owns."""
    image_labels = {LABEL_MANAGED: "true", LABEL_DOMAIN: "cars", "maintainer": "x"}
    copied = dict(image_labels)
    assert inherited_from_image(copied, image_labels)
    assert owner(copied, image_labels) is None
    # An agent's own labels on a container of that image: they differ from the image's.
    ours = image_labels | encode_labels(PARSED, "cars")
    assert not inherited_from_image(ours, image_labels)
    assert owner(ours, image_labels) == "cars"
    # An image made from one of our containers (docker commit) carries all its labels; a
    # container the agent makes from it records another spec (its own name and image).
    committed = encode_labels(PARSED, "cars")
    other = parse_component(component("db", "1", image="local/web:committed"))
    again = committed | encode_labels(other, "cars")
    assert owner(again, committed) == "cars"


def test_containers_labelled_before_the_domain_label_belong_to_the_default_domain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    legacy = {k: v for k, v in encode_labels(PARSED, "x").items() if k != LABEL_DOMAIN}
    labels_module._log_legacy_rule.cache_clear()  # as in a fresh process
    with caplog.at_level("WARNING"):
        domains = [label_domain(legacy) for _ in range(3)]
    assert domains == [LEGACY_DOMAIN] * 3
    assert LEGACY_DOMAIN == "containers"
    assert len([r for r in caplog.records if "earlier version" in r.getMessage()]) == 1
