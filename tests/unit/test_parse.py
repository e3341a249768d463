"""Desired state parsing (spec §2.2-§2.4, §3.6, our-behaviour D7/D8/D12)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cua.api.models import Baseline, ComponentWithConfig, DesiredState, Domain, KeyValuePair
from cua.containers.errors import DesiredStateError, SpecError
from cua.containers.parse import (
    BaselineSpec,
    ParsedComponent,
    parse_component,
    parse_desired_state,
)
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
from tests.builders import component, desired, log_config, memory_limits

pytestmark = pytest.mark.unit


def parse(*pairs: tuple[str, str], strict: bool = False) -> ParsedComponent:
    return parse_component(component(pairs=pairs), strict=strict)


def error(*pairs: tuple[str, str], id: str = "c", strict: bool = False) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_component(component(id, pairs=pairs), strict=strict)
    return caught.value


# --- the CM test vectors (§2.4) ------------------------------------------------------------


def test_minimal_config() -> None:
    parsed = parse_component(ComponentWithConfig(id="test-container", version="1.2.3"))
    assert parsed.spec == ContainerSpec(
        name="test-container",
        image="test-container:1.2.3",
        host_name="test-container-host",
        domain_name="test-container-domain",
        config=None,
        devices=(),
        ports=(),
        mounts=(),
        extra_hosts=(),
        network=NetworkMode.BRIDGE,
        privileged=False,
        terminal=False,
        interactive=False,
        restart=RestartPolicy(RestartPolicyType.UNLESS_STOPPED, 0, 0),
        log=log_config(LogDriver.JSON_FILE, 2, max_size="100M", mode=LogMode.BLOCKING),
        resources=None,
    )
    assert parsed.id == "test-container"
    assert parsed.version == "1.2.3"
    assert parsed.image_as_given == "test-container:1.2.3"
    assert parsed.warnings == ()


def test_to_container_vector() -> None:
    parsed = parse(
        ("device", "/dev/abc:/dev/ABC"),
        ("device", "/dev/xyz"),
        ("port", "80:8888/tcp"),
        ("port", "123.456.789.000:80:80"),
        ("mount", "/tmp:/var/tmp"),
        ("mount", "/TMP"),
        ("host", "ctr_host"),
        ("host", "testhost"),
        ("env", "DEBUG=true"),
        ("cmd", "arg1"),
        ("env", "ENV1="),
        ("cmd", "arg2"),
        ("restartPolicy", "on-failure"),
        ("restartMaxRetries", "5"),
        ("restartTimeout", "X"),
        ("terminal", "YES"),
        ("interactive", "1"),
        ("memory", "50M"),
    )
    spec = parsed.spec
    assert spec.devices == (DeviceMapping("/dev/abc", "/dev/ABC", "rwm"),)
    assert spec.ports == (PortMapping(80, 8888, 80, "0.0.0.0", "tcp"),)
    assert spec.mounts == (MountPoint("/tmp", "/var/tmp", Propagation.RPRIVATE),)
    assert spec.extra_hosts == ("ctr_host", "testhost")
    assert spec.config == ProcessConfig(env=("DEBUG=true", "ENV1="), cmd=("arg1", "arg2"))
    assert spec.restart == RestartPolicy(RestartPolicyType.ON_FAILURE, 5, 0)
    assert (spec.terminal, spec.interactive) == (False, True)
    assert spec.resources == memory_limits(memory="50M")
    assert parsed.warnings == (
        'container c: device "/dev/xyz" ignored: expected <host path>:<container path>'
        "[:<permissions>]",
        'container c: port "123.456.789.000:80:80" ignored: the host IP "123.456.789.000" '
        "is not an IP address",
        'container c: mount "/TMP" ignored: expected <source>:<destination>[:<propagation>]',
        # Kanto's order: the IO flags are read before the restart policy.
        'container c: terminal "YES" is not a boolean; using false',
        'container c: restartTimeout "X" is not an integer; using 0',
    )


# --- keys, repetition, Go syntaxes ------------------------------------------------------------


def test_single_valued_keys_last_wins_and_multi_keep_order() -> None:
    parsed = parse(
        ("image", "a:1"), ("env", "B=2"), ("image", "b:2"), ("env", "A=1"), ("cmd", "z"),
        ("cmd", "a"), ("network", "host"), ("network", "bridge"),
    )  # fmt: skip
    assert parsed.spec.image == "b:2"
    assert parsed.image_as_given == "b:2"
    assert parsed.spec.env == ("B=2", "A=1")
    assert parsed.spec.cmd == ("z", "a")
    assert parsed.spec.network is NetworkMode.BRIDGE


def test_image_is_verbatim_and_keys_are_case_sensitive() -> None:
    parsed = parse(("image", "Registry.Example/busybox:Latest"), ("Image", "other"))
    assert parsed.spec.image == "Registry.Example/busybox:Latest"
    assert parsed.warnings == (
        'container c: unknown config key "Image" ignored (did you mean "image"?)',
    )


def test_unknown_config_key_names_the_closest_known_key_and_fails_strict() -> None:
    parsed = parse(("image", "b:1"), ("restartPolcy", "no"), ("zzz", "1"))
    assert parsed.warnings == (
        'container c: unknown config key "restartPolcy" ignored (did you mean "restartPolicy"?)',
        'container c: unknown config key "zzz" ignored',
    )
    state = desired(component("web", "1", pairs=[("image", "b:1"), ("restartPolcy", "no")]))
    assert parse_desired_state(state, "containers").warnings == (
        'container web: unknown config key "restartPolcy" ignored (did you mean "restartPolicy"?)',
    )
    with pytest.raises(DesiredStateError) as info:
        parse_desired_state(state, "containers", strict=True)
    assert 'web: unknown config key "restartPolcy" (did you mean "restartPolicy"?)' in str(
        info.value
    )


def test_inventory_keys_are_ignored_silently() -> None:
    parsed = parse(("status", "Running"), ("created", "x"), ("hostName", "h"), ("domainName", "d"))
    assert parsed.warnings == ()
    assert parsed.spec.host_name == "c-host"
    assert parsed.spec.domain_name == "c-domain"


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_go_true(text: str) -> None:
    parsed = parse(("privileged", text), ("terminal", text), ("interactive", text))
    assert (parsed.spec.privileged, parsed.spec.terminal, parsed.spec.interactive) == (
        True, True, True
    )  # fmt: skip
    assert parsed.warnings == ()


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_go_false(text: str) -> None:
    assert parse(("privileged", text)).spec.privileged is False
    assert parse(("privileged", text)).warnings == ()


@pytest.mark.parametrize("text", ["YES", "yes", "on", "", " true", "tRUE", "2"])
def test_not_a_go_bool_is_false_with_a_warning(text: str) -> None:
    parsed = parse(("privileged", text))
    assert parsed.spec.privileged is False
    assert parsed.warnings == (f'container c: privileged "{text}" is not a boolean; using false',)


@pytest.mark.parametrize(("text", "value"), [("5", 5), ("+5", 5), ("007", 7), ("-0", 0)])
def test_go_atoi(text: str, value: int) -> None:
    parsed = parse(("restartPolicy", "on-failure"), ("restartMaxRetries", text))
    assert parsed.spec.restart.max_retries == value
    assert parsed.warnings == ()


@pytest.mark.parametrize(
    "text", ["", " 5", "5 ", "1_000", "٣", "5.0", "0x10", "9223372036854775808"]
)
def test_not_a_go_int_is_zero_with_a_warning(text: str) -> None:
    parsed = parse(("restartPolicy", "on-failure"), ("restartMaxRetries", text))
    assert parsed.spec.restart.max_retries == 0
    assert len(parsed.warnings) == 1
    assert "restartMaxRetries" in parsed.warnings[0]


def test_numbers_of_thousands_of_digits_are_input_errors_not_crashes() -> None:
    huge = "9" * 5000
    parsed = parse(
        ("restartPolicy", "on-failure"),
        ("restartMaxRetries", huge),
        ("logMaxFiles", huge),
        ("port", f"{huge}:80"),
    )
    assert parsed.spec.restart.max_retries == 0
    assert parsed.spec.log.max_files == 2
    assert parsed.spec.ports == ()
    assert len(parsed.warnings) == 3
    assert "is not an integer" in error(("port", f"80:{huge}"), strict=True).args[0]


def test_restart_retries_and_timeout_only_for_on_failure() -> None:
    for policy in ("no", "always", "unless-stopped"):
        parsed = parse(
            ("restartPolicy", policy), ("restartMaxRetries", "3"), ("restartTimeout", "junk")
        )
        assert parsed.spec.restart == RestartPolicy(RestartPolicyType(policy), 0, 0)
        assert parsed.warnings == ()  # not even read
    parsed = parse(
        ("restartPolicy", "on-failure"), ("restartMaxRetries", "3"), ("restartTimeout", "180")
    )
    assert parsed.spec.restart == RestartPolicy(RestartPolicyType.ON_FAILURE, 3, 180)


def test_restart_defaults() -> None:
    assert parse().spec.restart == RestartPolicy(RestartPolicyType.UNLESS_STOPPED, 0, 0)
    assert parse(("restartPolicy", "on-failure")).spec.restart == RestartPolicy(
        RestartPolicyType.ON_FAILURE, 0, 0
    )


# --- log config -------------------------------------------------------------------------------


def test_log_none_clears_size_and_files_but_keeps_path() -> None:
    parsed = parse(
        ("logDriver", "none"), ("logMaxFiles", "-5"), ("logMaxSize", "junk"), ("logPath", "/l")
    )
    assert parsed.spec.log == log_config(
        LogDriver.NONE, 0, max_size="", root_dir="/l", mode=LogMode.BLOCKING, max_buffer_size=""
    )


def test_log_json_file_defaults_and_zero_files() -> None:
    assert parse(("logMaxFiles", "0"), ("logDriver", "")).spec.log == log_config()
    parsed = parse(("logMaxFiles", "6"), ("logMaxSize", "100K"), ("logPath", "/tmp/logs"))
    assert parsed.spec.log == log_config(
        LogDriver.JSON_FILE, 6, max_size="100K", root_dir="/tmp/logs", mode=LogMode.BLOCKING
    )


def test_log_modes() -> None:
    assert parse(("logMode", "non-blocking")).spec.log.max_buffer_size.text == "1M"
    assert parse(("logMode", "non-blocking"), ("logMaxBufferSize", "5k")).spec.log == log_config(
        mode=LogMode.NON_BLOCKING, max_buffer_size="5k"
    )
    assert parse(("logMode", "blocking"), ("logMaxBufferSize", "junk")).spec.log == log_config()
    assert parse(("logMode", "")).spec.log.mode is LogMode.BLOCKING


# --- resources (D12: no swap doubling) --------------------------------------------------------


def test_memory_swap_kept_as_given() -> None:
    assert parse(("memory", "200M")).spec.resources == memory_limits("200M", "", "")
    assert parse(("memory", "200M"), ("memorySwap", "-1")).spec.resources == memory_limits(
        "200M", "", "-1"
    )
    assert parse(
        ("memory", "200m"), ("memoryReservation", "100m"), ("memorySwap", "400m")
    ).spec.resources == memory_limits("200m", "100m", "400m")


def test_resources_absent_unless_a_memory_key_is_non_empty() -> None:
    assert (
        parse(("memory", ""), ("memorySwap", ""), ("memoryReservation", "")).spec.resources is None
    )
    assert parse(("memoryReservation", "10M")).spec.resources == memory_limits("", "10M", "")


@pytest.mark.parametrize("size", ["100M", "1.5g", "200 m", "3m", "4096k", "1G", "0M", "3.0M"])
def test_valid_sizes(size: str) -> None:
    assert parse(("memory", size)).spec.resources == memory_limits(memory=size)


# --- validation errors: Kanto's exact texts ----------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "text"),
    [
        ((("image", ""),), "the containers image configuration is invalid"),
        ((("env", "FOO-BAR"),), "invalid environmental variable declaration provided : FOO-BAR"),
        ((("env", ""),), "invalid environmental variable declaration provided : "),
        ((("env", "1A"),), "invalid environmental variable declaration provided : 1A"),
        ((("network", "x"),), "unsupported network mode x"),
        ((("network", "HOST"),), "unsupported network mode HOST"),
        (
            (("network", "host"), ("port", "80:80")),
            "cannot use port mappings when in host network mode",
        ),
        (
            (("network", "host"), ("host", "ctr:host_ip")),
            "cannot use the host_ip reserved key or any of its modifications when in host "
            "network mode",
        ),
        (
            (("network", "host"), ("host", "ctr:host_ip_eth0")),
            "cannot use the host_ip reserved key or any of its modifications when in host "
            "network mode",
        ),
        (
            (("privileged", "true"), ("device", "/dev/a:/dev/a")),
            "cannot create the container as privileged and with specified devices at the same "
            "time - choose one of the options",
        ),
        (
            (("device", ":/dev/a"),),
            "both path on the host and in the container must be specified for a device mapping",
        ),
        ((("mount", ":/x"),), "source and destination must be set for a mount point"),
        ((("mount", "/x:"),), "source and destination must be set for a mount point"),
        (
            (("mount", "/x:/y:bogus"),),
            "propagation mode must be set to one of the supported modes",
        ),
        ((("restartPolicy", "sometimes"),), "unsupported restart policy type sometimes"),
        ((("restartPolicy", ""),), "unsupported restart policy type "),
        (
            (("restartPolicy", "on-failure"), ("restartMaxRetries", "-1")),
            "restart policy max retry count cannot be negative",
        ),
        (
            (("restartPolicy", "on-failure"), ("restartTimeout", "-1")),
            "restart policy retry timeout cannot be negative",
        ),
        ((("logDriver", "syslog"),), "unsupported log driver configuration"),
        ((("logMaxFiles", "-1"),), "max log files cannot be < 1"),
        ((("logMaxSize", "1000"),), "invalid format of max logs size - 1000"),
        ((("logMaxSize", "1.2.3M"),), "invalid format of max logs size - 1.2.3M"),
        ((("logMaxSize", "1M\n"),), "invalid format of max logs size - 1M\n"),
        ((("logMode", "async"),), "unsupported log mode configuration"),
        (
            (("logMode", "non-blocking"), ("logMaxBufferSize", "1 MB")),
            "invalid format of max buffer size - 1 MB",
        ),
        ((("memory", "1000"),), "invalid format of memory - 1000"),
        ((("memory", "2M"),), "minimum memory allowed is 3M"),
        ((("memory", "3071k"),), "minimum memory allowed is 3M"),
        ((("memoryReservation", "x"),), "invalid format of memory reservation - x"),
        ((("memorySwap", "-2"),), "invalid format of swap memory - -2"),
        ((("memorySwap", "10M"),), "swap memory - 10M, memory must be set as well"),
        (
            (("memory", "20M"), ("memorySwap", "10M")),
            "swap memory - 10M is less than memory - 20M",
        ),
        (
            (("memory", "20M"), ("memoryReservation", "30M")),
            "reservation memory - 30M must be lower than memory - 20M",
        ),
    ],
)
def test_validation_texts(pairs: tuple[tuple[str, str], ...], text: str) -> None:
    assert str(error(*pairs)) == text


def test_validation_order_follows_kanto() -> None:
    # image before name before mounts before host config before env.
    everything_wrong = (
        ("env", "1BAD"), ("memory", "1k"), ("restartPolicy", "x"), ("logDriver", "x"),
        ("network", "x"), ("mount", "/a:/b:x"), ("image", ""),
    )  # fmt: skip
    assert str(error(*everything_wrong, id="bad name")) == (
        "the containers image configuration is invalid"
    )
    assert str(error(*everything_wrong[:-1], id="bad name")) == (
        "invalid container name format : bad name"
    )
    assert str(error(*everything_wrong[:-1])) == (
        "propagation mode must be set to one of the supported modes"
    )
    assert str(error(*everything_wrong[:-2])) == "unsupported network mode x"
    assert str(error(*everything_wrong[:-3])) == "unsupported log driver configuration"
    assert str(error(*everything_wrong[:-4])) == "unsupported restart policy type x"
    assert str(error(*everything_wrong[:-5])) == "minimum memory allowed is 3M"
    assert str(error(*everything_wrong[:-6])) == (
        "invalid environmental variable declaration provided : 1BAD"
    )


def test_memory_unlimited_swap_passes_without_memory() -> None:
    assert parse(("memorySwap", "-1")).spec.resources == memory_limits(memory_swap="-1")


def test_env_value_is_hidden_in_errors() -> None:
    failure = error(("env", "MY-PASSWORD=hunter2"))
    assert str(failure) == (
        "invalid environmental variable declaration provided : MY-PASSWORD=<hidden>"
    )
    assert "hunter2" not in repr(failure.args)
    assert failure.key == "env"
    assert failure.value == ""


def test_env_forms() -> None:
    parsed = parse(("env", "A=b=c"), ("env", "EMPTY="), ("env", "REMOVE"), ("env", "_x1=y z"))
    assert parsed.spec.env == ("A=b=c", "EMPTY=", "REMOVE", "_x1=y z")
    # Go's `.` does not match a newline either.
    assert "declaration" in str(error(("env", "A=line1\nline2")))


@pytest.mark.parametrize("name", ["a", "A_1", "_x", "0abc", "web.server-1"])
def test_valid_names(name: str) -> None:
    image = [KeyValuePair(key="image", value="img:1")]
    assert (
        parse_component(ComponentWithConfig(id=name, version="1", config=image)).spec.name == name
    )


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "containers:a", "a/b", "ä"])
def test_invalid_names(name: str) -> None:
    assert str(error(id=name)) == f"invalid container name format : {name}"


def test_spec_error_carries_component_key_value() -> None:
    failure = error(("network", "x"), id="web")
    assert (failure.component, failure.key, failure.value) == ("web", "network", "x")


# --- devices, ports, mounts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "device"),
    [
        ("/dev/a:/dev/b", DeviceMapping("/dev/a", "/dev/b", "rwm")),
        ("/dev/a:/dev/b:r", DeviceMapping("/dev/a", "/dev/b", "r")),
        ("/dev/a:/dev/b:mw", DeviceMapping("/dev/a", "/dev/b", "mw")),
        (" /dev/a:/dev/b:rwm ", DeviceMapping("/dev/a", "/dev/b", "rwm")),
        ("/dev/a:", DeviceMapping("/dev/a", "/dev/a", "rwm")),  # CM fills the path
    ],
)
def test_devices(text: str, device: DeviceMapping) -> None:
    assert parse(("device", text)).spec.devices == (device,)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("/dev/a", "expected <host path>:<container path>[:<permissions>]"),
        ("/a:/b:r:w", "expected <host path>:<container path>[:<permissions>]"),
        ("/a:/b:", "the permissions must be 1 to 3 of the letters r, w, m"),
        ("/a:/b:rwmr", "the permissions must be 1 to 3 of the letters r, w, m"),
        ("/a:/b:x", "the permissions must be 1 to 3 of the letters r, w, m"),
    ],
)
def test_malformed_devices(text: str, reason: str) -> None:
    parsed = parse(("device", text))
    assert parsed.spec.devices == ()
    assert parsed.warnings == (f'container c: device "{text}" ignored: {reason}',)
    strict = error(("device", text), strict=True)
    assert str(strict) == f'invalid device "{text}": {reason}'
    assert (strict.key, strict.value) == ("device", text)


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ("80:80", PortMapping(80, 80, 80, "0.0.0.0", "tcp")),
        ("88:8888/udp", PortMapping(88, 8888, 88, "0.0.0.0", "udp")),
        ("5000-6000:8080/udp", PortMapping(5000, 8080, 6000, "0.0.0.0", "udp")),
        ("192.168.0.1:7000-8000:8081/tcp", PortMapping(7000, 8081, 8000, "192.168.0.1", "tcp")),
        ("127.0.0.1:80:80", PortMapping(80, 80, 80, "127.0.0.1", "tcp")),
        ("80:80/", PortMapping(80, 80, 80, "0.0.0.0", "tcp")),
        ("80:80/sctp", PortMapping(80, 80, 80, "0.0.0.0", "sctp")),
        ("80:80/tcp/x", PortMapping(80, 80, 80, "0.0.0.0", "tcp")),  # proto dropped, as in Go
        ("+80:80", PortMapping(80, 80, 80, "0.0.0.0", "tcp")),
        ("0:80", PortMapping(0, 80, 0, "0.0.0.0", "tcp")),
        ("90-80:80", PortMapping(90, 80, 80, "0.0.0.0", "tcp")),
    ],
)
def test_ports(text: str, port: PortMapping) -> None:
    parsed = parse(("port", text))
    assert parsed.spec.ports == (port,)
    assert parsed.warnings == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("localhost:55555:30555-30555/tcp", 'the host IP "localhost" is not an IP address'),
        ("80", "expected [<host-ip>:]<host-port>[-<host-port-end>]:<container-port>[/<protocol>]"),
        ("::1:80:80", "expected [<host-ip>:]<host-port>[-<host-port-end>]:<container-port>"
         "[/<protocol>]"),
        ("80:30555-30555", 'the container port "30555-30555" is not an integer'),
        ("x:80", 'the host port "x" is not an integer'),
        ("1-x:80", 'the host port range end "x" is not an integer'),
        ("80:70000", "the container port 70000 is not between 0 and 65535"),
        ("-1:80", 'the host port "" is not an integer'),
        ("80:-5", "the container port -5 is not between 0 and 65535"),
        ("999.1.1.1:80:80", 'the host IP "999.1.1.1" is not an IP address'),
    ],
)  # fmt: skip
def test_malformed_ports(text: str, reason: str) -> None:
    parsed = parse(("port", text))
    assert parsed.spec.ports == ()
    assert parsed.warnings == (f'container c: port "{text}" ignored: {reason}',)
    assert str(error(("port", text), strict=True)) == f'invalid port "{text}": {reason}'


@pytest.mark.parametrize(
    ("text", "mount"),
    [
        ("/a:/b", MountPoint("/a", "/b", Propagation.RPRIVATE)),
        ("/a:/b:", MountPoint("/a", "/b", Propagation.RPRIVATE)),  # CM fills the default
        *[(f"/a:/b:{p.value}", MountPoint("/a", "/b", p)) for p in Propagation],
    ],
)
def test_mounts(text: str, mount: MountPoint) -> None:
    assert parse(("mount", text)).spec.mounts == (mount,)


def test_malformed_mount_lenient_and_strict() -> None:
    parsed = parse(("mount", "/a:/b:shared:x"), ("mount", "/c:/d"))
    assert parsed.spec.mounts == (MountPoint("/c", "/d"),)
    assert parsed.warnings == (
        'container c: mount "/a:/b:shared:x" ignored: expected <source>:<destination>'
        "[:<propagation>]",
    )
    assert str(error(("mount", "/a"), strict=True)) == (
        'invalid mount "/a": expected <source>:<destination>[:<propagation>]'
    )


def test_privileged_with_only_malformed_devices_is_fine() -> None:
    assert parse(("privileged", "true"), ("device", "/dev/x")).spec.privileged is True


def test_extra_hosts_are_not_validated() -> None:
    assert parse(("host", "ctr_host")).spec.extra_hosts == ("ctr_host",)


def test_env_or_cmd_block_present_only_when_given() -> None:
    assert parse(("cmd", "")).spec.config == ProcessConfig(env=(), cmd=("",))
    assert parse(("env", "A=1")).spec.config == ProcessConfig(env=("A=1",), cmd=())
    assert parse(("image", "x")).spec.config is None


# --- the desired state ------------------------------------------------------------------------


def state_error(state: DesiredState, strict: bool = False) -> str:
    with pytest.raises(DesiredStateError) as caught:
        parse_desired_state(state, "containers", strict=strict)
    return str(caught.value)


def test_domain_count() -> None:
    assert state_error(DesiredState()) == (
        "one domain expected in desired state specification, but got 0"
    )
    two = DesiredState(domains=[Domain(id="containers"), Domain(id="x")])
    assert state_error(two) == "one domain expected in desired state specification, but got 2"


def test_domain_id() -> None:
    assert (
        state_error(desired(domain="x")) == "domain id mismatch - expecting containers, received x"
    )
    assert state_error(desired(domain="Containers")) == (
        "domain id mismatch - expecting containers, received Containers"
    )


def test_component_errors_are_wrapped() -> None:
    state = desired(component("ok"), component("bad", env="FOO-BAR"))
    assert state_error(state) == (
        "cannot convert desired state components to container configurations: invalid "
        "configuration for container bad: invalid environmental variable declaration "
        "provided : FOO-BAR"
    )


def test_invalid_name_is_wrapped() -> None:
    state = desired(component("containers:influxdb"))
    assert state_error(state) == (
        "cannot convert desired state components to container configurations: invalid "
        "configuration for container containers:influxdb: invalid container name format : "
        "containers:influxdb"
    )


def test_first_failing_component_wins() -> None:
    state = desired(component("one", network="a"), component("two", network="b"))
    assert state_error(state).endswith("container one: unsupported network mode a")


def test_duplicate_component_ids_are_rejected() -> None:
    state = desired(component("web"), component("web"))
    assert state_error(state) == (
        "cannot convert desired state components to container configurations: invalid "
        "configuration for container web: another component of the desired state has the "
        "same id"
    )


def test_strict_mode_names_every_malformed_entry_up_to_a_kanto_error() -> None:
    state = desired(
        component("one", port="x:1:2", device="/dev/a"),
        component("two", mount="/only-one-part"),
        component("three", network="nope"),
        component("four", port="y:1:2"),  # after the Kanto error: not reached
    )
    message = state_error(state, strict=True)
    assert message.startswith(
        "cannot convert desired state components to container configurations: "
        'invalid configuration for container one: invalid port "x:1:2": '
    )
    assert '; invalid device "/dev/a": ' in message
    assert '; invalid configuration for container two: invalid mount "/only-one-part": ' in message
    assert message.endswith(
        "; invalid configuration for container three: unsupported network mode nope"
    )
    assert "four" not in message
    # Lenient: the same entries are only warnings, and the Kanto error alone is reported.
    assert state_error(state) == (
        "cannot convert desired state components to container configurations: "
        "invalid configuration for container three: unsupported network mode nope"
    )


def test_strict_mode_error_names_component_key_and_value() -> None:
    state = desired(component("web", port="localhost:1:2"))
    assert state_error(state, strict=True) == (
        "cannot convert desired state components to container configurations: invalid "
        'configuration for container web: invalid port "localhost:1:2": the host IP '
        '"localhost" is not an IP address'
    )
    lenient = parse_desired_state(state, "containers")
    assert lenient.warnings == (
        'container web: port "localhost:1:2" ignored: the host IP "localhost" is not an IP address',
    )


def test_baselines() -> None:
    state = desired(
        component("a"),
        component("b"),
        component("c"),
        baselines={
            "one": ["containers:a", "self-update:os", "containers:c"],
            "other-domain": ["self-update:os"],
        },
    )
    parsed = parse_desired_state(state, "containers")
    assert parsed.baselines == (
        BaselineSpec("one", ("a", "c")),
        BaselineSpec("other-domain", ()),
    )
    assert [c.id for c in parsed.containers] == ["a", "b", "c"]


def test_baseline_with_unknown_container() -> None:
    state = desired(component("a"), baselines={"B1": ["containers:x"]})
    assert state_error(state) == (
        "cannot process desired state baselines with containers: problem with baseline B1: "
        "cannot find container component containers:x"
    )


def test_a_container_belongs_to_one_baseline_only() -> None:
    # Kanto takes a container out of the pool once a baseline claims it.
    state = desired(
        component("a"),
        baselines={"B1": ["containers:a"], "B2": ["containers:a"]},
    )
    assert state_error(state) == (
        "cannot process desired state baselines with containers: problem with baseline B2: "
        "cannot find container component containers:a"
    )


def test_error_precedence_components_before_baselines() -> None:
    state = desired(
        component("a", network="x"),
        baselines={"B": ["containers:zzz"]},
    )
    assert state_error(state).startswith("cannot convert desired state components")
    assert state_error(
        DesiredState(baselines=[Baseline(title="B", components=["containers:zzz"])])
    ).startswith("one domain expected")


def test_system_containers() -> None:
    assert parse_desired_state(desired(), "containers").system_containers is None
    parsed = parse_desired_state(
        desired(config=(("systemContainers", "sys-container-1, corelib"), ("other", "x"))),
        "containers",
    )
    assert parsed.system_containers == ("sys-container-1", "corelib")
    empty = parse_desired_state(desired(config=(("systemContainers", ""),)), "containers")
    assert empty.system_containers == ("",)
    last = parse_desired_state(
        desired(config=(("systemContainers", "a"), ("systemContainers", " b ,c"))), "containers"
    )
    assert last.system_containers == ("b", "c")


def test_no_components_is_valid() -> None:
    parsed = parse_desired_state(desired(), "containers")
    assert parsed.containers == ()
    assert parsed.baselines == ()
    assert parsed.warnings == ()


def test_component_lookup() -> None:
    parsed = parse_desired_state(desired(component("a", "9")), "containers")
    found = parsed.component("a")
    assert found is not None
    assert found.version == "9"
    assert parsed.component("b") is None


# --- properties -------------------------------------------------------------------------------

_KEYS = st.sampled_from(
    [
        "image", "env", "cmd", "device", "port", "host", "mount", "network", "privileged",
        "terminal", "interactive", "restartPolicy", "restartMaxRetries", "restartTimeout",
        "logDriver", "logMaxFiles", "logMaxSize", "logPath", "logMode", "logMaxBufferSize",
        "memory", "memoryReservation", "memorySwap", "status", "whatever",
    ]
)  # fmt: skip
_VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["on-failure", "non-blocking", "host", "none", "-1", "3M", "1:2", "a:b:c"]),
    st.from_regex(r"\A[0-9:./\-a-z ]{0,16}\Z"),
)
_COMPONENTS = st.builds(
    ComponentWithConfig,
    id=st.one_of(st.just("web"), st.text(max_size=8)),
    version=st.text(max_size=5),
    config=st.lists(st.builds(KeyValuePair, key=_KEYS, value=_VALUES), max_size=12),
)


@given(_COMPONENTS, st.booleans())
def test_junk_raises_only_spec_error_and_is_deterministic(
    junk: ComponentWithConfig, strict: bool
) -> None:
    try:
        first = parse_component(junk, strict=strict)
    except SpecError as exc:
        message = str(exc)
        with pytest.raises(SpecError) as again:
            parse_component(junk, strict=strict)
        assert str(again.value) == message
        return
    assert parse_component(junk, strict=strict) == first
    for warning in first.warnings:
        assert warning.startswith(f"container {junk.id}: ")


_SECRET_ENV = st.builds(
    lambda name, value: KeyValuePair(key="env", value=f"{name}=SECRET{value}"),
    st.sampled_from(["A", "1A", "A-B", "", "_", "a b"]),
    st.text(max_size=10),
)


@given(
    st.lists(
        st.one_of(_SECRET_ENV, st.builds(KeyValuePair, key=_KEYS.filter(lambda k: k != "env"),
                                         value=_VALUES.filter(lambda v: "SECRET" not in v))),
        max_size=10,
    ),
    st.booleans(),
)  # fmt: skip
def test_env_values_never_reach_warnings_or_errors(pairs: list[KeyValuePair], strict: bool) -> None:
    junk = ComponentWithConfig(id="web", version="1", config=pairs)
    shown: list[str] = []
    try:
        shown += parse_component(junk, strict=strict).warnings
    except SpecError as exc:
        shown += [str(exc), exc.value]
    assert not [text for text in shown if "SECRET" in text]


@given(st.lists(_COMPONENTS, max_size=3), st.booleans())
def test_junk_desired_state_raises_only_desired_state_error(
    components: list[ComponentWithConfig], strict: bool
) -> None:
    try:
        parsed = parse_desired_state(desired(*components), "containers", strict=strict)
    except DesiredStateError:
        return
    assert [c.id for c in parsed.containers] == [c.id for c in components]
    assert parsed.warnings == tuple(w for c in parsed.containers for w in c.warnings)


# --- image references (distribution's grammar; ours: Kanto fails only at the pull) ----------


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "busybox:1.36",
        "docker.io/library/hello-world:latest",
        "ghcr.io/eclipse/kuksa.val/databroker:0.3.0",
        "127.0.0.1:5000/app:v1",
        "localhost:5000/a/b/c",
        "[::1]:5000/app",
        "Registry.Example/app:Tag_1.0-rc",
        "a__b/c--d/e.f_g:x",
        "app@sha256:" + "a" * 64,
        "app:1@sha256:" + "0" * 64,
    ],
)
def test_valid_image_references(image: str) -> None:
    assert parse(("image", image)).spec.image == image


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("x/../get?names=y", "it does not follow the reference format"),
        ("app:../../images/create", "it does not follow the reference format"),
        ("app/json?all=1", "it does not follow the reference format"),
        ("Busybox", "the repository name must be lowercase"),
        ("app:" + "t" * 129, "it does not follow the reference format"),
        ("app@sha256:abc", "it does not follow the reference format"),
        ("a/" * 200 + "b", "the repository name is longer than 255 characters"),
        ("a" * 2000, "it is longer than 1024 characters"),
        ("app\n", "it does not follow the reference format"),
        ("-app", "it does not follow the reference format"),
        ("http://server/bundle.raucb", "it does not follow the reference format"),
    ],
)
def test_invalid_image_references_fail_naming_the_component(image: str, problem: str) -> None:
    failure = error(("image", image), id="web")
    assert failure.component == "web"
    assert failure.key == "image"
    assert str(failure).startswith("invalid image reference ")
    assert problem in str(failure)


def test_an_invalid_reference_fails_the_desired_state_naming_the_component() -> None:
    state = desired(component("web", image="x/../get?names=y"))
    with pytest.raises(DesiredStateError) as caught:
        parse_desired_state(state, "containers")
    assert str(caught.value) == (
        "cannot convert desired state components to container configurations: invalid"
        ' configuration for container web: invalid image reference "x/../get?names=y": it does'
        " not follow the reference format [host[:port]/]path[:tag][@digest]"
    )


def test_a_component_sent_again_is_not_parsed_again_and_a_changed_one_is() -> None:
    first = parse_component(component("app", env=["A=1"]))
    assert parse_component(component("app", env=["A=1"])) is first  # kept from the first
    changed = parse_component(component("app", env=["A=2"]))
    assert changed is not first
    assert changed.spec.env == ("A=2",)
    assert parse_component(component("app", env=["A=1"]), strict=True) is not first
