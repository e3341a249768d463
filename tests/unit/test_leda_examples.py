"""Leda's real documents (spec §8; public Leda examples: the desired state from examples/,
the others copied in tests/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cua.api.envelope import decode
from cua.api.models import DesiredState, DesiredStateCommand, Inventory
from cua.containers.errors import DesiredStateError
from cua.containers.parse import parse_desired_state
from cua.containers.spec import NetworkMode, RestartPolicy
from tests.builders import log_config

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data"
# The Leda desired state ships as an example; the tests read that copy.
LEDA_DESIRED = Path(__file__).parents[2] / "examples" / "leda-desired-state.json"
DISTRO = DATA / "leda-distro-tests"


def load_desired(path: Path) -> DesiredState:
    envelope = decode(path.read_text(), DesiredState, "desired state")
    assert envelope.payload is not None
    return envelope.payload


def test_leda_desired_state() -> None:
    envelope = decode(LEDA_DESIRED.read_text(), DesiredState, "ds")
    assert envelope.activity_id == "activity-id-leda-containers"
    assert envelope.timestamp == 0
    assert envelope.payload is not None
    parsed = parse_desired_state(envelope.payload, "containers")
    assert [(c.id, c.version) for c in parsed.containers] == [
        ("databroker", "0.3.0"),
        ("feedercan", "v0.1.1"),
        ("hvacservice-example", "v0.1.0"),
        ("seatservice-example", "v0.3.0"),
        ("cloudconnector", "main-47c01227a620a3dbd85b66e177205c06c0f7a52e"),
    ]
    assert parsed.warnings == (
        'container databroker: port "localhost:55555:30555-30555/tcp" ignored: the host IP '
        '"localhost" is not an IP address',
        'container seatservice-example: port "localhost:50051:30051-30051/tcp" ignored: the '
        'host IP "localhost" is not an IP address',
    )
    assert parsed.baselines == ()
    assert parsed.system_containers is None
    for container in parsed.containers:
        spec = container.spec
        assert spec.ports == ()
        assert spec.network is NetworkMode.BRIDGE
        assert spec.privileged is False
        assert spec.restart == RestartPolicy()
        assert spec.log == log_config(max_size="1M")
        assert spec.resources is None
    databroker = parsed.containers[0].spec
    assert databroker.image == "ghcr.io/eclipse/kuksa.val/databroker:0.3.0"
    assert databroker.env == ("RUST_LOG=info", "vehicle_data_broker=debug")
    cloud = parsed.containers[4].spec
    assert len(cloud.env) == 8
    assert "LOG_FILE=" in cloud.env
    assert [m.source for m in cloud.mounts] == [
        "/data/var/certificates/device.crt",
        "/data/var/certificates/device.key",
    ]
    assert cloud.extra_hosts == ("mosquitto:host_ip",)
    assert parsed.containers[1].spec.extra_hosts == ("databroker:container_databroker-host",)


def test_leda_desired_state_strict_names_both_ports() -> None:
    with pytest.raises(DesiredStateError) as caught:
        parse_desired_state(load_desired(LEDA_DESIRED), "containers",
                            strict=True)  # fmt: skip
    assert str(caught.value) == (
        "cannot convert desired state components to container configurations: invalid "
        'configuration for container databroker: invalid port "localhost:55555:30555-30555/tcp": '
        'the host IP "localhost" is not an IP address; invalid configuration for container '
        'seatservice-example: invalid port "localhost:50051:30051-30051/tcp": the host IP '
        '"localhost" is not an IP address'
    )


def test_leda_distro_desired_state() -> None:
    parsed = parse_desired_state(load_desired(DISTRO / "desired-state.json"), "containers")
    assert [c.id for c in parsed.containers] == [
        "databroker",
        "feedercan",
        "hvacservice-example",
        "seatservice-example",
    ]
    assert len(parsed.warnings) == 2


def test_leda_distro_no_containers() -> None:
    parsed = parse_desired_state(
        load_desired(DISTRO / "desired-state-no-containers.json"), "containers"
    )
    assert parsed.containers == ()
    assert parsed.warnings == ()


def test_leda_distro_empty_payload_fails_identification() -> None:
    with pytest.raises(DesiredStateError) as caught:
        parse_desired_state(load_desired(DISTRO / "update-state.json"), "containers")
    assert str(caught.value) == "one domain expected in desired state specification, but got 0"


@pytest.mark.parametrize(
    "name", ["start-update-example-x86.json", "start-update-example-arm64.json"]
)
def test_self_update_examples_are_another_domain(name: str) -> None:
    state = load_desired(DISTRO / name)
    with pytest.raises(DesiredStateError) as caught:
        parse_desired_state(state, "containers")
    assert str(caught.value) == "domain id mismatch - expecting containers, received self-update"
    # Read as the self-update domain, the bundle URL is no container image: identification
    # fails, naming the component (it would reach the Engine API otherwise).
    with pytest.raises(DesiredStateError) as caught:
        parse_desired_state(state, "self-update")
    assert "invalid configuration for container os-image: invalid image reference" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("download-command.json", "DOWNLOAD"),
        ("update-command.json", "UPDATE"),
        ("activate-command.json", "ACTIVATE"),
        ("cleanup-command.json", "CLEANUP"),
    ],
)
def test_leda_distro_commands(name: str, command: str) -> None:
    envelope = decode((DISTRO / name).read_text(), DesiredStateCommand, "command")
    assert envelope.payload == DesiredStateCommand(command=command, baseline="BASELINE NAME")


def test_leda_distro_get_state() -> None:
    envelope = decode((DISTRO / "get_state.json").read_text(), Inventory, "request")
    assert envelope.activity_id == "current-state-test-json"
    assert envelope.payload is None


def test_leda_current_state_decodes() -> None:
    envelope = decode((DATA / "currentstate-leda.json").read_text(), Inventory, "current state")
    assert envelope.payload is not None
    assert len(envelope.payload.software_nodes) == 8
    assert len(envelope.payload.associations) == 7


def test_the_default_limits_fit_1000_leda_components() -> None:
    """The default max_message_size fits a desired state of 1,000 Leda-sized components."""
    import json

    from cua.settings import Limits

    envelope = json.loads(LEDA_DESIRED.read_text())
    domain = envelope["payload"]["domains"][0]
    leda = domain["components"]
    domain["components"] = [
        {**leda[i % len(leda)], "id": f"{leda[i % len(leda)]['id']}-{i}"} for i in range(1000)
    ]
    envelope["payload"]["baselines"] = []
    raw = json.dumps(envelope, indent=2).encode()
    limits = Limits()
    assert len(raw) <= limits.max_message_size
    decoded = decode(
        raw,
        DesiredState,
        "desired state",
        max_size=limits.max_message_size,
        max_activity_id=limits.max_activity_id_length,
    )
    assert decoded.payload is not None
    parsed = parse_desired_state(
        decoded.payload, "containers", max_components=limits.max_components
    )
    assert len(parsed.containers) == 1000
