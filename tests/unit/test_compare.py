"""Desired vs current comparison (spec §3.1, §3.3)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cua.containers.compare import IDENTIFIED_MESSAGES, ActionKind, Comparison, compare, same_set
from cua.containers.parse import parse_component
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
    Resources,
    RestartPolicy,
    RestartPolicyType,
)
from tests.builders import component, log_config, memory_limits

pytestmark = pytest.mark.unit

BASE = ContainerSpec(
    name="web",
    image="registry/web:1",
    host_name="web-host",
    domain_name="web-domain",
    config=ProcessConfig(env=("A=1", "B=2"), cmd=("run", "--fast")),
    devices=(DeviceMapping("/dev/a", "/dev/a"),),
    ports=(PortMapping(80, 8080, 80),),
    mounts=(MountPoint("/data", "/data"),),
    extra_hosts=("db:10.0.0.1",),
)


def kind(desired: ContainerSpec, current: ContainerSpec | None) -> ActionKind:
    return compare(desired, current).kind


def test_messages_are_kantos() -> None:
    assert dict(IDENTIFIED_MESSAGES) == {
        ActionKind.CHECK: "No changes detected, existing container will be check only if it "
        "is running.",
        ActionKind.CREATE: "New container will be created and started.",
        ActionKind.RECREATE: "Existing container will be destroyed and replaced by a new one.",
        ActionKind.UPDATE: "Existing container will be updated with new configuration.",
        ActionKind.DESTROY: "Existing container will be destroyed, no longer needed.",
    }


def test_missing_current_is_create() -> None:
    assert compare(BASE, None) == Comparison(ActionKind.CREATE, ())


def test_identical_is_check() -> None:
    assert compare(BASE, replace(BASE)) == Comparison(ActionKind.CHECK, ())


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"image": "registry/web:2"}, "image"),
        ({"image": "docker.io/registry/web:1"}, "image"),  # exact string compare
        ({"mounts": (MountPoint("/data", "/data", Propagation.SHARED),)}, "mount"),
        ({"mounts": ()}, "mount"),
        ({"config": ProcessConfig(env=("A=1",), cmd=("run", "--fast"))}, "env"),
        ({"config": ProcessConfig(env=("A=1", "B=2"), cmd=("--fast", "run"))}, "cmd"),
        ({"terminal": True}, "terminal"),
        ({"interactive": True}, "interactive"),
        ({"privileged": True}, "privileged"),
        ({"network": NetworkMode.HOST}, "network"),
        ({"devices": (DeviceMapping("/dev/a", "/dev/a", "r"),)}, "device"),
        ({"extra_hosts": ()}, "host"),
        ({"ports": (PortMapping(80, 8080, 80, protocol="udp"),)}, "port"),
        ({"ports": (PortMapping(80, 8080, 81),)}, "port"),
        ({"ports": (PortMapping(80, 8080, 80, host_ip="127.0.0.1"),)}, "port"),
        ({"log": log_config(driver=LogDriver.NONE, max_files=0, max_size="")}, "logDriver"),
        ({"log": log_config(max_files=3)}, "logMaxFiles"),
        ({"log": log_config(max_size="1M")}, "logMaxSize"),
        ({"log": log_config(root_dir="/logs")}, "logPath"),
        ({"log": log_config(mode=LogMode.NON_BLOCKING, max_buffer_size="1M")}, "logMode"),
    ],
)
def test_recreate_differences(change: dict[str, object], key: str) -> None:
    result = compare(replace(BASE, **change), BASE)
    assert result.kind is ActionKind.RECREATE
    assert key in result.differences


@pytest.mark.parametrize(
    ("change", "keys"),
    [
        ({"resources": memory_limits(memory="200M")}, ("memory",)),
        ({"restart": RestartPolicy(RestartPolicyType.NO)}, ("restartPolicy",)),
        (
            {"restart": RestartPolicy(RestartPolicyType.ON_FAILURE, 5, 30)},
            ("restartPolicy", "restartMaxRetries", "restartTimeout"),
        ),
    ],
)
def test_update_differences(change: dict[str, object], keys: tuple[str, ...]) -> None:
    assert compare(replace(BASE, **change), BASE) == Comparison(ActionKind.UPDATE, keys)


def test_resources_tuple_compare() -> None:
    with_limits = replace(BASE, resources=memory_limits("200M", "100M", "400M"))
    assert compare(replace(BASE, resources=memory_limits("200M", "100M", "")), with_limits) == (
        Comparison(ActionKind.UPDATE, ("memorySwap",))
    )
    # Kanto: removing every memory key is an UPDATE that removes nothing, forever (§3.3).
    # D12: a runtime update cannot remove a limit, so it is a RECREATE.
    assert compare(BASE, with_limits) == Comparison(
        ActionKind.RECREATE, ("memory", "memoryReservation", "memorySwap")
    )
    # A present block with nothing set still differs from none.
    assert compare(replace(BASE, resources=memory_limits()), BASE) == Comparison(
        ActionKind.UPDATE, ("memory",)
    )


def test_d12_removing_a_limit_is_a_recreate_not_an_update_forever() -> None:
    limited = replace(BASE, resources=memory_limits("200M", "100M", ""))
    # Dropping the reservation only: the engine cannot unset it at runtime.
    assert compare(replace(BASE, resources=memory_limits("200M", "", "")), limited) == Comparison(
        ActionKind.RECREATE, ("memoryReservation",)
    )
    # Lowering or raising limits stays a runtime UPDATE, as in Kanto.
    assert compare(replace(BASE, resources=memory_limits("300M", "50M", "")), limited) == (
        Comparison(ActionKind.UPDATE, ("memory", "memoryReservation"))
    )
    # Adding limits stays an UPDATE too.
    assert compare(limited, BASE).kind is ActionKind.UPDATE


def test_first_mismatch_decides_but_all_differences_are_listed() -> None:
    desired = replace(
        BASE,
        image="registry/web:2",
        restart=RestartPolicy(RestartPolicyType.ALWAYS),
        terminal=True,
    )
    assert compare(desired, BASE) == Comparison(
        ActionKind.RECREATE, ("image", "terminal", "restartPolicy")
    )


def test_env_is_a_set_and_cmd_is_a_list() -> None:
    reordered_env = replace(BASE, config=ProcessConfig(env=("B=2", "A=1"), cmd=("run", "--fast")))
    assert kind(reordered_env, BASE) is ActionKind.CHECK
    reordered_cmd = replace(BASE, config=ProcessConfig(env=("A=1", "B=2"), cmd=("--fast", "run")))
    assert compare(reordered_cmd, BASE).differences == ("cmd",)


def test_set_semantics_with_duplicates() -> None:
    # test_equal_duplicates_diff_count: [x,x,y] equals [y,y,x]
    assert same_set(["x", "x", "y"], ["y", "y", "x"])
    assert not same_set(["x", "x"], ["x"])
    assert not same_set(["x", "y"], ["x", "z"])


class Counted:
    """An element that counts how often it is compared."""

    comparisons = 0

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        Counted.comparisons += 1
        return isinstance(other, Counted) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def test_same_set_is_linear_not_quadratic() -> None:
    # 50,000 env entries took 29 s on the event loop with Kanto's nested loops.
    count = 5000
    first = [Counted(i) for i in range(count)]
    second = [Counted(i) for i in reversed(range(count))]
    Counted.comparisons = 0
    assert same_set(first, second)
    assert not same_set(first, [*second[1:], Counted(-1)])
    assert Counted.comparisons <= 4 * count
    assert same_set([], [])
    a = replace(BASE, extra_hosts=("h:1", "h:1", "g:2"))
    b = replace(BASE, extra_hosts=("g:2", "g:2", "h:1"))
    assert kind(a, b) is ActionKind.CHECK
    assert kind(replace(BASE, extra_hosts=("h:1", "h:1")), replace(BASE, extra_hosts=("h:1",))) is (
        ActionKind.RECREATE
    )


def test_sets_of_mounts_devices_ports_ignore_order() -> None:
    two_mounts = (MountPoint("/a", "/a"), MountPoint("/b", "/b"))
    two_ports = (PortMapping(1, 1, 1), PortMapping(2, 2, 2))
    two_devices = (DeviceMapping("/d1", "/d1"), DeviceMapping("/d2", "/d2"))
    forward = replace(BASE, mounts=two_mounts, ports=two_ports, devices=two_devices)
    backward = replace(
        BASE, mounts=two_mounts[::-1], ports=two_ports[::-1], devices=two_devices[::-1]
    )
    assert kind(forward, backward) is ActionKind.CHECK


def test_config_block_presence() -> None:
    no_block = replace(BASE, config=None)
    empty_block = replace(BASE, config=ProcessConfig())
    # {} vs absent differ (containers created outside the agent are recreated once).
    assert compare(no_block, empty_block) == Comparison(ActionKind.RECREATE, ("env", "cmd"))
    assert compare(no_block, BASE) == Comparison(ActionKind.RECREATE, ("env", "cmd"))
    only_env = replace(BASE, config=ProcessConfig(env=("A=1",)))
    assert compare(no_block, only_env) == Comparison(ActionKind.RECREATE, ("env",))
    assert kind(no_block, replace(no_block)) is ActionKind.CHECK
    # cmd: both empty are equal.
    assert kind(only_env, replace(BASE, config=ProcessConfig(env=("A=1",), cmd=()))) is (
        ActionKind.CHECK
    )


def test_version_hostname_domainname_are_not_compared() -> None:
    other = replace(BASE, host_name="x", domain_name="y", name="other")
    assert kind(BASE, other) is ActionKind.CHECK


def test_version_change_with_same_image_is_check() -> None:
    # §3.7: influxdb version "2.7.1" with image influxdb:1.8.4.
    def spec(version: str) -> ContainerSpec:
        influxdb = component("influxdb", version, image="docker.io/library/influxdb:1.8.4")
        return parse_component(influxdb).spec

    assert kind(spec("2.7.1"), spec("1.8.4")) is ActionKind.CHECK


def test_no_swap_doubling_means_no_spurious_update() -> None:
    # D12: the spec we record is the one we compare; re-applying gives CHECK at once.
    web = component("web", "1", memory="200M")
    spec = parse_component(web).spec
    assert spec.resources == memory_limits(memory="200M")  # recorded as given: swap not doubled
    assert kind(spec, parse_component(web).spec) is ActionKind.CHECK
    # What a doubled swap (CM's create-time default) would give against the same desired spec.
    doubled = replace(spec, resources=memory_limits("200M", "", "400M"))
    assert kind(spec, doubled) is ActionKind.UPDATE


_specs = st.builds(
    ContainerSpec,
    name=st.just("web"),
    image=st.sampled_from(["a:1", "a:2"]),
    config=st.none() | st.builds(ProcessConfig, env=st.lists(st.sampled_from(["A=1", "B="]),
                                 max_size=3).map(tuple), cmd=st.lists(st.sampled_from(["x", "y"]),
                                 max_size=2).map(tuple)),
    extra_hosts=st.lists(st.sampled_from(["h:1", "g:2"]), max_size=3).map(tuple),
    privileged=st.booleans(),
    restart=st.sampled_from([RestartPolicy(), RestartPolicy(RestartPolicyType.NO)]),
    resources=st.none() | st.just(memory_limits("10M")),
)  # fmt: skip


@given(_specs, _specs)
def test_comparison_properties(desired: ContainerSpec, current: ContainerSpec) -> None:
    result = compare(desired, current)
    assert compare(desired, desired).kind is ActionKind.CHECK
    assert (result.kind is ActionKind.CHECK) == (result.differences == ())
    # The kind does not depend on the direction, except that dropping a memory limit needs
    # a new container while adding one is a runtime update (D12, tested below).
    reverse = compare(current, desired)
    assert set(reverse.differences) == set(result.differences)
    if reverse.kind is not result.kind:
        assert {reverse.kind, result.kind} == {ActionKind.RECREATE, ActionKind.UPDATE}
        assert (desired.resources is None) != (current.resources is None)
        assert (result.kind is ActionKind.RECREATE) == (desired.resources is None)


_limits = st.none() | st.builds(
    memory_limits, *[st.sampled_from(["", "10M", "20M"])] * 2, st.sampled_from(["", "40M", "-1"])
)


@given(_specs, _limits, _limits)
def test_d12_direction(
    spec: ContainerSpec, mine: Resources | None, theirs: Resources | None
) -> None:
    # Only the memory limits differ, so the direction rule (D12) decides in every example.
    current, desired = replace(spec, resources=mine), replace(spec, resources=theirs)
    result, reverse = compare(desired, current), compare(current, desired)
    assert set(reverse.differences) == set(result.differences)
    assert set(result.differences) <= {"memory", "memoryReservation", "memorySwap"}
    have, want = mine or memory_limits(), theirs or memory_limits()
    dropped = (have.memory and not want.memory) or (
        have.memory_reservation and not want.memory_reservation
    )
    if dropped:
        assert result.kind is ActionKind.RECREATE
    elif result.differences:
        assert result.kind is ActionKind.UPDATE
    else:
        assert result.kind is ActionKind.CHECK
        assert reverse.kind is ActionKind.CHECK
    if reverse.kind is not result.kind:
        # Only dropping a limit makes the kind depend on the direction.
        assert {reverse.kind, result.kind} == {ActionKind.RECREATE, ActionKind.UPDATE}
