"""The current state inventory (spec §5.2-§5.4, §8.2)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cua import AGENT_NAME
from cua.api.envelope import decode, encode, go_json
from cua.api.models import DesiredState
from cua.containers.gosyntax import duration_string
from cua.containers.inventory import (
    InventoryContainer,
    build_inventory,
    container_parameters,
    format_port,
    image_version,
)
from cua.containers.parse import parse_component, parse_desired_state
from cua.containers.spec import (
    ContainerSpec,
    DeviceMapping,
    LogDriver,
    LogMode,
    MountPoint,
    NetworkMode,
    PortMapping,
    ProcessConfig,
    Propagation,
    RestartPolicy,
    RestartPolicyType,
)
from cua.containers.state import ContainerDetails, ContainerState, ContainerStatus
from tests.builders import component, log_config, memory_limits

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data"
# The Leda desired state ships as an example; the tests read that copy.
LEDA_DESIRED = Path(__file__).parents[2] / "examples" / "leda-desired-state.json"
CREATED = "2023-08-25T08:51:20.887363594Z"
FINISHED = "2023-08-25T09:00:00.5Z"
RUNNING = ContainerState(ContainerStatus.RUNNING, started_at=CREATED)


def spec(**changes: object) -> ContainerSpec:
    base = ContainerSpec(name="c", image="", host_name="c-host", domain_name="c-domain")
    return replace(base, **changes)  # type: ignore[arg-type]


def details(
    the_spec: ContainerSpec,
    state: ContainerState = RUNNING,
    created: str = CREATED,
    engine_image: str = "",
) -> ContainerDetails:
    return ContainerDetails(
        id="0123",
        name=the_spec.name,
        image=engine_image,
        labels={},
        state=state,
        created=created,
        spec=the_spec,
    )


def params(the_spec: ContainerSpec, verbose: bool = False) -> list[tuple[str, str]]:
    """The configuration parameters only (state/created stripped)."""
    pairs = [(p.key, p.value) for p in container_parameters(details(the_spec), verbose=verbose)]
    return pairs[: [k for k, _ in pairs].index("status")]


VERBOSE_DEFAULTS = [
    ("image", ""),
    ("domainName", "c-domain"),
    ("hostName", "c-host"),
    ("terminal", "false"),
    ("interactive", "false"),
    ("privileged", "false"),
    ("restartPolicy", "unless-stopped"),
    ("restartMaxRetries", "0"),
    ("restartTimeout", "0s"),
    ("network", "bridge"),
    ("logDriver", "json-file"),
    ("logMaxFiles", "2"),
    ("logMaxSize", "100M"),
    ("logMode", "blocking"),
]


def verbose_with(*changes: tuple[str, str]) -> list[tuple[str, str]]:
    result = dict(VERBOSE_DEFAULTS)
    result.update(changes)
    return list(result.items())


# --- §5.3 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("mycontainerregistry.com:8080/my-container:v1", "v1"),
        ("my-container:my-branch:123456", "my-branch:123456"),
        ("my-container@sha256:1234abcd", "sha256:1234abcd"),
        ("registry:5000/a/b@sha256:ff:x", "sha256:ff:x"),
        ("my-container", "n/a"),
        ("my-container:", "n/a"),
        ("my-container@", "n/a"),
        ("", "n/a"),
        ("registry:5000/", "n/a"),
        ("ghcr.io/eclipse/kuksa.val/databroker:0.3.0", "0.3.0"),
    ],
)
def test_image_version(image: str, version: str) -> None:
    assert image_version(image) == version


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (30, "30s"), (59, "59s"), (60, "1m0s"), (180, "3m0s"), (3600, "1h0m0s"),
     (3661, "1h1m1s"), (90061, "25h1m1s"), (-30, "-30s"), (-3661, "-1h1m1s")],
)  # fmt: skip
def test_go_duration_string(seconds: int, text: str) -> None:
    assert duration_string(seconds) == text


# --- §5.4 vectors (TestHostConfigParameters & co) ---------------------------------------------


def test_defaults_emit_nothing_and_verbose_everything() -> None:
    assert params(spec()) == []
    assert params(spec(), verbose=True) == VERBOSE_DEFAULTS


def test_privileged() -> None:
    assert params(spec(privileged=True)) == [("privileged", "true")]
    assert ("privileged", "false") in params(spec(), verbose=True)


def test_restart_policies() -> None:
    assert params(spec(restart=RestartPolicy(RestartPolicyType.NO))) == [("restartPolicy", "no")]
    assert params(spec(restart=RestartPolicy(RestartPolicyType.ALWAYS))) == [
        ("restartPolicy", "always")
    ]
    on_failure = spec(restart=RestartPolicy(RestartPolicyType.ON_FAILURE, 5, 180))
    assert params(on_failure) == [
        ("restartPolicy", "on-failure"),
        ("restartMaxRetries", "5"),
        ("restartTimeout", "3m0s"),
    ]
    assert params(spec(restart=RestartPolicy(RestartPolicyType.NO)), verbose=True) == (
        verbose_with(("restartPolicy", "no"))
    )


def test_network() -> None:
    assert params(spec(network=NetworkMode.HOST)) == [("network", "host")]
    assert ("network", "bridge") in params(spec(), verbose=True)


def test_log_driver_none() -> None:
    none = spec(log=log_config(driver=LogDriver.NONE, max_files=0, max_size=""))
    assert params(none) == [("logDriver", "none")]
    verbose = params(none, verbose=True)
    assert ("logDriver", "none") in verbose
    assert "logMaxFiles" not in dict(verbose)
    assert "logMaxSize" not in dict(verbose)


def test_log_json_file_custom() -> None:
    custom = spec(log=log_config(max_files=6, max_size="100K"))
    assert params(custom) == [("logMaxFiles", "6"), ("logMaxSize", "100K")]
    assert params(custom, verbose=True) == verbose_with(
        ("logMaxFiles", "6"), ("logMaxSize", "100K")
    )
    with_path = spec(log=log_config(root_dir="/tmp/logs"))
    assert params(with_path) == [("logPath", "/tmp/logs")]
    assert params(with_path, verbose=True) == [
        *VERBOSE_DEFAULTS[:-1],
        ("logPath", "/tmp/logs"),
        ("logMode", "blocking"),
    ]


def test_log_modes() -> None:
    buffered = spec(log=log_config(mode=LogMode.NON_BLOCKING, max_buffer_size="100K"))
    assert params(buffered) == [("logMode", "non-blocking"), ("logMaxBufferSize", "100K")]
    default_buffer = spec(log=log_config(mode=LogMode.NON_BLOCKING, max_buffer_size="1M"))
    assert params(default_buffer) == [("logMode", "non-blocking")]
    assert params(default_buffer, verbose=True)[-2:] == [
        ("logMode", "non-blocking"),
        ("logMaxBufferSize", "1M"),
    ]


def test_resources() -> None:
    assert params(spec(resources=memory_limits("200m", "100m", "50m"))) == [
        ("memory", "200m"),
        ("memoryReservation", "100m"),
        ("memorySwap", "50m"),
    ]
    assert params(spec(resources=memory_limits("1g", "", "150m"))) == [
        ("memory", "1g"),
        ("memorySwap", "150m"),
    ]
    # Verbose adds no empty limit (CM test_..._resources_with_memory_and_reservation_only).
    assert params(spec(resources=memory_limits("300m", "300m", "")), verbose=True)[-2:] == [
        ("memory", "300m"),
        ("memoryReservation", "300m"),
    ]
    assert params(spec(resources=memory_limits()), verbose=True) == VERBOSE_DEFAULTS


def test_io_config() -> None:
    assert params(spec(terminal=True, interactive=True)) == [
        ("terminal", "true"),
        ("interactive", "true"),
    ]


def test_devices_ports_hosts_mounts_env_cmd_echoed_in_order() -> None:
    devices = ["/dev/ttyACM0:/dev/ttyUSB0:rwm", "/dev/ttyACM1:/dev/ttyUSB1:r",
               "/dev/ttyACM2:/dev/ttyUSB2:mw"]  # fmt: skip
    ports = ["80:80/tcp", "88:8888/udp", "5000-6000:8080/udp", "192.168.0.1:7000-8000:8081/tcp"]
    mounts = [f"/m{i}:/n{i}:{p.value}" for i, p in enumerate(Propagation)]
    parsed = parse_component(
        component(
            "c",
            "1",
            image="img:1",
            device=devices,
            port=ports,
            host=["ctrhost:host_ip", "h:192.168.0.1"],
            mount=mounts,
            cmd="arg1",
            env="ENV_C=",
        )
    )
    assert params(parsed.spec) == (
        [("image", "img:1")]
        + [("device", d) for d in devices]
        + [("port", p) for p in ports]
        + [("host", "ctrhost:host_ip"), ("host", "h:192.168.0.1")]
        + [("mount", m) for m in mounts]
        + [("env", "ENV_C="), ("cmd", "arg1")]
    )


@pytest.mark.parametrize(
    ("port", "text"),
    [
        (PortMapping(80, 80), "80:80/tcp"),
        (PortMapping(80, 80, 0, "", ""), "80:80"),
        (PortMapping(5000, 8080, 6000, "0.0.0.0", "udp"), "5000-6000:8080/udp"),
        (PortMapping(80, 80, 80, "localhost", "tcp"), "localhost:80:80/tcp"),
        (PortMapping(0, 80, 0, "", ""), ":80"),
        (PortMapping(80, 0, 0, "", "tcp"), "80/tcp"),
    ],
)
def test_port_format(port: PortMapping, text: str) -> None:
    assert format_port(port) == text


def test_device_format_skips_empty_parts() -> None:
    assert params(spec(devices=(DeviceMapping("/dev/a", "", ""),))) == [("device", "/dev/a")]


def state_params(state: ContainerState, verbose: bool = False) -> list[tuple[str, str]]:
    found = container_parameters(details(spec(), state), verbose=verbose)
    pairs = [(p.key, p.value) for p in found]
    return pairs[[k for k, _ in pairs].index("status") :]


def test_state_parameters() -> None:
    assert state_params(ContainerState(ContainerStatus.RUNNING)) == [
        ("status", "Running"),
        ("created", CREATED),
    ]
    assert state_params(ContainerState(ContainerStatus.RUNNING), verbose=True) == [
        ("status", "Running"),
        ("finishedAt", ""),
        ("exitCode", "0"),
        ("created", CREATED),
        ("restartCount", "0"),
        ("manuallyStopped", "false"),
        ("startedSuccessfullyBefore", "false"),
    ]
    stopped = ContainerState(ContainerStatus.STOPPED, finished_at=FINISHED)
    assert state_params(stopped) == [
        ("status", "Stopped"),
        ("finishedAt", FINISHED),
        ("created", CREATED),
    ]
    assert ("exitCode", "0") in state_params(stopped, verbose=True)
    assert state_params(ContainerState(ContainerStatus.STOPPED, -1, finished_at=FINISHED))[:3] == [
        ("status", "Stopped"),
        ("finishedAt", FINISHED),
        ("exitCode", "-1"),
    ]
    exited = ContainerState(ContainerStatus.EXITED, 1234, CREATED, FINISHED, restart_count=3)
    assert state_params(exited) == [
        ("status", "Exited"),
        ("finishedAt", FINISHED),
        ("exitCode", "1234"),
        ("created", CREATED),
        ("restartCount", "3"),
        ("startedSuccessfullyBefore", "true"),
    ]
    unknown = ContainerState(ContainerStatus.UNKNOWN, 999, finished_at=FINISHED)
    assert state_params(unknown)[:3] == [
        ("status", "Unknown"),
        ("finishedAt", FINISHED),
        ("exitCode", "999"),
    ]
    # A running container hides exit code and finish time outside verbose mode.
    assert state_params(ContainerState(ContainerStatus.RUNNING, 1, CREATED, FINISHED)) == [
        ("status", "Running"),
        ("created", CREATED),
    ]


@pytest.mark.parametrize("status", list(ContainerStatus))
def test_every_status_name(status: ContainerStatus) -> None:
    assert state_params(ContainerState(status))[0] == ("status", status.value)


def test_image_override_and_fallback() -> None:
    with_image = spec(image="registry/x:1")
    pairs = container_parameters(details(with_image), verbose=False, image="x:1")
    assert (pairs[0].key, pairs[0].value) == ("image", "x:1")
    no_image = container_parameters(details(spec(), engine_image="sha256:abc"), verbose=False)
    assert (no_image[0].key, no_image[0].value) == ("image", "sha256:abc")


# --- §5.2 structure, §8.2 Leda current state ---------------------------------------------------


def test_root_only() -> None:
    inventory = build_inventory("containers", "1.0.0", [], verbose=False)
    assert encode("initial-current-state-1745576976829", inventory, 1745576976830) == (
        b'{"activityId":"initial-current-state-1745576976829","timestamp":1745576976830,'
        b'"payload":{"softwareNodes":[{"id":"containers-update-agent","version":"1.0.0",'
        b'"name":"Eclipse Kanto Containers Update Agent",'
        b'"parameters":[{"key":"domain","value":"containers"}],"type":"APPLICATION"}]}}'
    )
    assert AGENT_NAME == "Eclipse Kanto Containers Update Agent"


def test_other_domain_root_and_ids() -> None:
    container = InventoryContainer(details(spec(name="web", image="web:2")))
    wire = build_inventory("self-update", "2.0", [container], verbose=False).to_wire()
    assert wire["softwareNodes"][0]["id"] == "self-update-update-agent"
    assert wire["softwareNodes"][1]["id"] == "self-update:web"
    assert wire["softwareNodes"][1]["version"] == "2"
    assert "name" not in wire["softwareNodes"][1]
    assert wire["associations"] == [
        {"sourceId": "self-update-update-agent", "targetId": "self-update:web"}
    ]


def test_unmanaged_marker() -> None:
    ours = InventoryContainer(details(spec(name="a", image="a:1")))
    theirs = InventoryContainer(details(spec(name="b", image="b:1")), managed=False)
    marked = build_inventory("containers", "1", [ours, theirs], verbose=False, mark_unmanaged=True)
    assert marked.software_nodes[1].parameters[-1].key == "created"
    last = marked.software_nodes[2].parameters[-1]
    assert (last.key, last.value) == ("managed", "false")
    plain = build_inventory("containers", "1", [ours, theirs], verbose=False)
    assert plain.software_nodes[2].parameters[-1].key == "created"


def _leda_extra_specs() -> dict[str, ContainerSpec]:
    """sua and vum: deployed by Leda outside the desired state (sua's port has `localhost`)."""
    sua = ContainerSpec(
        name="sua",
        image="ghcr.io/eclipse-leda/leda-contrib-self-update-agent/self-update-agent:build-177",
        host_name="sua-host",
        domain_name="sua-domain",
        ports=(PortMapping(30052, 50052, 30052, "localhost", "tcp"),),
        extra_hosts=("mosquitto:host_ip",),
        mounts=(
            MountPoint("/var/run/dbus/system_bus_socket", "/var/run/dbus/system_bus_socket",
                       Propagation.SHARED),
            MountPoint("/data/selfupdates", "/data/selfupdates"),
            MountPoint("/etc/os-release", "/etc/os-release"),
        ),
        log=log_config(max_size="1M"),
    )  # fmt: skip
    vum = ContainerSpec(
        name="vum",
        image="ghcr.io/eclipse-leda/leda-contrib-vehicle-update-manager/vehicleupdatemanager:"
        "main-1d8dca55a755c4b3c7bc06eabfa06ad49e068a48",
        host_name="vum-host",
        domain_name="vum-domain",
        extra_hosts=("mosquitto:host_ip",),
        mounts=(MountPoint("/proc", "/proc", Propagation.SHARED),),
        config=ProcessConfig(
            env=(
                "SELF_UPDATE_TIMEOUT=30m",
                "SELF_UPDATE_ENABLE_REBOOT=true",
                "THINGS_CONN_BROKER=tcp://mosquitto:1883",
                "THINGS_FEATURES=ContainerOrchestrator",
            )
        ),
        log=log_config(max_size="1M"),
    )
    return {"sua": sua, "vum": vum}


def test_leda_current_state_is_reproduced_byte_for_byte() -> None:
    """The Leda desired state, deployed, reports exactly Leda's current state document."""
    expected_text = (DATA / "currentstate-leda.json").read_text()
    expected = json.loads(expected_text)
    desired = decode(LEDA_DESIRED.read_text(), DesiredState, "ds")
    assert desired.payload is not None
    parsed = parse_desired_state(desired.payload, "containers")
    specs = {c.id: c.spec for c in parsed.containers} | _leda_extra_specs()
    created = {
        node["id"].removeprefix("containers:"): {p["key"]: p["value"] for p in node["parameters"]}[
            "created"
        ]
        for node in expected["payload"]["softwareNodes"][1:]
    }
    containers = [
        InventoryContainer(details(specs[name], created=created[name])) for name in created
    ]
    inventory = build_inventory("containers", "1.0.0", containers, verbose=False)
    raw = encode(expected["activityId"], inventory, expected["timestamp"])
    assert json.loads(raw) == expected
    assert raw == go_json(expected)
