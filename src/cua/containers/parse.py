"""Desired state -> normalized container specs (spec §2.2-§2.4, Kanto's `to_containers.go`).

Parsing reproduces Kanto exactly: which keys are read, multi- and single-valued keys, Go's
bool/int syntax, the defaults, the validation order and its error texts. Where Kanto is
silent about dropped input (spec §10 D7, D8), this module is not: every ignored entry
becomes a warning, and in strict mode a malformed port/device/mount entry is an error.

Pure: no I/O, no clock, no randomness (Kanto's random container id is not modelled; the
engine names containers).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cua.api.models import Baseline, ComponentWithConfig, DesiredState, KeyValuePair
from cua.containers import gosyntax
from cua.containers.errors import DesiredStateError, SpecError
from cua.containers.gosyntax import Size, SizeError
from cua.containers.reference import reference_problem
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
    engine_bytes,
)
from cua.typos import closest

# --- config keys (Kanto's names) ------------------------------------------------------------

KEY_IMAGE = "image"
KEY_ENV = "env"
KEY_CMD = "cmd"
KEY_DEVICE = "device"
KEY_PORT = "port"
KEY_HOST = "host"
KEY_MOUNT = "mount"
KEY_NETWORK = "network"
KEY_PRIVILEGED = "privileged"
KEY_TERMINAL = "terminal"
KEY_INTERACTIVE = "interactive"
KEY_RESTART_POLICY = "restartPolicy"
KEY_RESTART_MAX_RETRIES = "restartMaxRetries"
KEY_RESTART_TIMEOUT = "restartTimeout"
KEY_LOG_DRIVER = "logDriver"
KEY_LOG_MAX_FILES = "logMaxFiles"
KEY_LOG_MAX_SIZE = "logMaxSize"
KEY_LOG_PATH = "logPath"
KEY_LOG_MODE = "logMode"
KEY_LOG_MAX_BUFFER_SIZE = "logMaxBufferSize"
KEY_MEMORY = "memory"
KEY_MEMORY_RESERVATION = "memoryReservation"
KEY_MEMORY_SWAP = "memorySwap"
KEY_SYSTEM_CONTAINERS = "systemContainers"  # domain-level config

MULTI_VALUED_KEYS = frozenset({KEY_DEVICE, KEY_PORT, KEY_HOST, KEY_MOUNT, KEY_ENV, KEY_CMD})
SINGLE_VALUED_KEYS = frozenset(
    {
        KEY_IMAGE,
        KEY_NETWORK,
        KEY_PRIVILEGED,
        KEY_TERMINAL,
        KEY_INTERACTIVE,
        KEY_RESTART_POLICY,
        KEY_RESTART_MAX_RETRIES,
        KEY_RESTART_TIMEOUT,
        KEY_LOG_DRIVER,
        KEY_LOG_MAX_FILES,
        KEY_LOG_MAX_SIZE,
        KEY_LOG_PATH,
        KEY_LOG_MODE,
        KEY_LOG_MAX_BUFFER_SIZE,
        KEY_MEMORY,
        KEY_MEMORY_RESERVATION,
        KEY_MEMORY_SWAP,
    }
)
# Keys of the inventory (§5.4) that Kanto ignores without a word when they come back in a
# desired state (a current state fed back as desired state is common).
INVENTORY_ONLY_KEYS = frozenset(
    {
        "domainName",
        "hostName",
        "status",
        "finishedAt",
        "exitCode",
        "created",
        "restartCount",
        "manuallyStopped",
        "startedSuccessfullyBefore",
    }
)

_NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]*", re.ASCII)
_ENV = re.compile(r"[a-zA-Z_]([a-zA-Z0-9_]*)(|=(.*))")  # `.` stops at a newline, as in Go
_HOST_IP_RESERVED = re.compile(r"(.+):host_ip(_(.+))?")
_PORT_MAX = 65535
_MIN_MEMORY = 3 * 1024 * 1024
_DEVICE_PERMISSIONS = frozenset("rwm")


@dataclass(frozen=True, slots=True)
class ParsedComponent:
    """One desired container: its component, its normalized spec, and what was ignored.

    `image_as_given` is the image exactly as the desired state gave it (or the
    `<id>:<version>` default); it is what the labels record and the inventory reports.
    """

    id: str
    version: str
    spec: ContainerSpec
    image_as_given: str
    warnings: tuple[str, ...] = ()
    # The malformed port/device/mount entries that were ignored, as strict mode's errors
    # name them (`invalid port "x": reason`); `parse_desired_state(strict=True)` fails on them.
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BaselineSpec:
    """A desired-state baseline: its title and the container names of this domain in it."""

    title: str
    components: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParsedDesiredState:
    containers: tuple[ParsedComponent, ...]
    baselines: tuple[BaselineSpec, ...]
    # None: the domain config has no `systemContainers` key (the agent's list applies).
    system_containers: tuple[str, ...] | None
    warnings: tuple[str, ...]

    def component(self, name: str) -> ParsedComponent | None:
        """The component whose id is `name` (ids are unique after parsing)."""
        for parsed in self.containers:
            if parsed.id == name:
                return parsed
        return None


def quote(value: str) -> str:
    """A value as it appears in our own messages: JSON-quoted, so boundaries are clear."""
    return json.dumps(value, ensure_ascii=False)


class _Malformed(ValueError):
    """A port/device/mount entry Kanto's parser rejects; the text says why."""


# --- entry parsers (CM's containers_parse.go) -------------------------------------------------


def parse_device(text: str) -> DeviceMapping:
    """`<host>:<container>[:<perms>]`, perms 1-3 of r, w, m. Raises _Malformed."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise _Malformed("expected <host path>:<container path>[:<permissions>]")
    host, container = parts[0], parts[1]
    permissions = "rwm"
    if len(parts) == 3:
        permissions = parts[2]
        if not 1 <= len(permissions) <= 3 or not set(permissions) <= _DEVICE_PERMISSIONS:
            raise _Malformed("the permissions must be 1 to 3 of the letters r, w, m")
    # CM's defaults: an empty container path is the host path.
    return DeviceMapping(host_path=host, container_path=container or host, permissions=permissions)


def parse_mount(text: str) -> tuple[str, str, str]:
    """`<source>:<destination>[:<propagation>]` -> raw parts (validated later, as in CM)."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise _Malformed("expected <source>:<destination>[:<propagation>]")
    propagation = parts[2] if len(parts) == 3 else ""
    return parts[0], parts[1], propagation or Propagation.RPRIVATE.value


def _port_number(text: str, what: str) -> int:
    # Go: strconv.ParseInt(text, 10, 32), then a silent uint16 conversion. A number outside
    # 0-65535 would wrap around in Kanto; we reject it instead (ours, see docs/models.md).
    value = gosyntax.parse_int(text, lo=gosyntax.INT32_MIN, hi=gosyntax.INT32_MAX)
    if value is None:
        raise _Malformed(f"the {what} {quote(text)} is not an integer")
    if not 0 <= value <= _PORT_MAX:
        raise _Malformed(f"the {what} {value} is not between 0 and {_PORT_MAX}")
    return value


def parse_port(text: str) -> PortMapping:
    """`[<host-ip>:]<host-port>[-<host-port-end>]:<container-port>[/<proto>]`, normalized."""
    with_proto = text.strip().split("/")
    mapping = with_proto[0]
    protocol = with_proto[1] if len(with_proto) == 2 else ""
    parts = mapping.strip().split(":")
    host_ip = ""
    if len(parts) == 3:
        host_ip = parts[0]
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise _Malformed(f"the host IP {quote(host_ip)} is not an IP address") from None
        host_part, container_part = parts[1], parts[2]
    elif len(parts) == 2:
        host_part, container_part = parts
    else:
        raise _Malformed(
            "expected [<host-ip>:]<host-port>[-<host-port-end>]:<container-port>[/<protocol>]"
        )
    host_range = host_part.strip().split("-")
    if len(host_range) == 2:
        host_port_end = _port_number(host_range[1], "host port range end")
        host_port = _port_number(host_range[0], "host port")
    else:
        host_port_end = 0
        host_port = _port_number(host_part, "host port")
    container_port = _port_number(container_part, "container port")
    return PortMapping(
        host_port=host_port,
        container_port=container_port,
        host_port_end=host_port_end or host_port,
        host_ip=host_ip or "0.0.0.0",
        protocol=protocol or "tcp",
    )


# --- one component ----------------------------------------------------------------------------


def _env_for_message(entry: str) -> str:
    """An env entry safe to show: the value after `=` is hidden (it may be a secret)."""
    name, sep, _ = entry.partition("=")
    return f"{name}=<hidden>" if sep else entry


class _ComponentParser:
    def __init__(self, component: ComponentWithConfig, strict: bool) -> None:
        self.component = component
        self.name = component.id
        self.strict = strict
        self.warnings: list[str] = []
        self.rejected: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(f"container {self.name}: {text}")

    def fail(self, text: str, key: str = "", value: str = "") -> SpecError:
        return SpecError(text, component=self.name, key=key, value=value)

    def malformed(self, key: str, value: str, reason: str) -> None:
        rejection = f"invalid {key} {quote(value)}: {reason}"
        if self.strict:
            raise self.fail(rejection, key, value)
        self.rejected.append(rejection)
        self.warn(f"{key} {quote(value)} ignored: {reason}")

    def unknown_key(self, key: str) -> None:
        """Ignored, as Kanto does, with the closest known key; strict mode: an error."""
        hint = closest(key, SINGLE_VALUED_KEYS | MULTI_VALUED_KEYS)
        suffix = f" (did you mean {quote(hint)}?)" if hint else ""
        if self.strict:
            raise self.fail(f"unknown config key {quote(key)}{suffix}", key)
        self.rejected.append(f"unknown config key {quote(key)}{suffix}")
        self.warn(f"unknown config key {quote(key)} ignored{suffix}")

    def boolean(self, config: dict[str, str], key: str) -> bool:
        if key not in config:
            return False
        value = gosyntax.parse_bool(config[key])
        if value is None:
            self.warn(f"{key} {quote(config[key])} is not a boolean; using false")
            return False
        return value

    def integer(self, config: dict[str, str], key: str) -> int:
        if key not in config:
            return 0
        value = gosyntax.parse_int(config[key])
        if value is None:
            self.warn(f"{key} {quote(config[key])} is not an integer; using 0")
            return 0
        return value

    def parse(self) -> ParsedComponent:
        env: list[str] = []
        cmd: list[str] = []
        hosts: list[str] = []
        devices: list[DeviceMapping] = []
        ports: list[PortMapping] = []
        mounts: list[tuple[str, str, str]] = []
        config: dict[str, str] = {}
        for pair in self.component.config:
            key, value = pair.key, pair.value
            if key == KEY_ENV:
                env.append(value)
            elif key == KEY_CMD:
                cmd.append(value)
            elif key == KEY_HOST:
                hosts.append(value)
            elif key == KEY_DEVICE:
                try:
                    devices.append(parse_device(value))
                except _Malformed as exc:
                    self.malformed(key, value, str(exc))
            elif key == KEY_PORT:
                try:
                    ports.append(parse_port(value))
                except _Malformed as exc:
                    self.malformed(key, value, str(exc))
            elif key == KEY_MOUNT:
                try:
                    mounts.append(parse_mount(value))
                except _Malformed as exc:
                    self.malformed(key, value, str(exc))
            else:
                if key not in SINGLE_VALUED_KEYS and key not in INVENTORY_ONLY_KEYS:
                    self.unknown_key(key)
                config[key] = value  # single-valued: the last occurrence wins

        image = config.get(KEY_IMAGE, f"{self.component.id}:{self.component.version}")
        terminal = self.boolean(config, KEY_TERMINAL)
        interactive = self.boolean(config, KEY_INTERACTIVE)
        privileged = self.boolean(config, KEY_PRIVILEGED)
        log_max_files = self.integer(config, KEY_LOG_MAX_FILES)
        restart_type = config.get(KEY_RESTART_POLICY, RestartPolicyType.UNLESS_STOPPED.value)
        max_retries = timeout = 0
        if restart_type == RestartPolicyType.ON_FAILURE.value:
            max_retries = self.integer(config, KEY_RESTART_MAX_RETRIES)
            timeout = self.integer(config, KEY_RESTART_TIMEOUT)

        # Validation, in CM's order (ValidateContainer): image, name, mounts, host config
        # (capabilities, network, devices, log, restart policy, resources), env.
        if image == "":
            raise self.fail("the containers image configuration is invalid", KEY_IMAGE, image)
        if not _NAME.fullmatch(self.name):
            raise self.fail(f"invalid container name format : {self.name}")
        mount_points = tuple(self._mount(*parts) for parts in mounts)
        if privileged and devices:
            raise self.fail(
                "cannot create the container as privileged and with specified devices at the "
                "same time - choose one of the options"
            )
        network = self._network(config.get(KEY_NETWORK, ""), ports, hosts)
        for device in devices:
            if device.host_path == "" or device.container_path == "":
                raise self.fail(
                    "both path on the host and in the container must be specified for a "
                    "device mapping"
                )
        log = self._log(config, log_max_files)
        restart = self._restart(restart_type, max_retries, timeout)
        resources = self._resources(config)
        for entry in env:
            if not _ENV.fullmatch(entry):
                # Kanto shows the whole entry; we hide the value (it may be a secret).
                raise self.fail(
                    "invalid environmental variable declaration provided : "
                    + _env_for_message(entry),
                    KEY_ENV,
                )
        # Ours: Kanto finds a bad reference only when the pull fails.
        problem = reference_problem(image)
        if problem is not None:
            shown = image if len(image) <= 200 else image[:200] + "…"
            raise self.fail(f"invalid image reference {quote(shown)}: {problem}", KEY_IMAGE, image)

        spec = ContainerSpec(
            name=self.name,
            image=image,
            host_name=f"{self.name}-host",
            domain_name=f"{self.name}-domain",
            config=ProcessConfig(env=tuple(env), cmd=tuple(cmd)) if env or cmd else None,
            devices=tuple(devices),
            ports=tuple(ports),
            mounts=mount_points,
            extra_hosts=tuple(hosts),
            network=network,
            privileged=privileged,
            terminal=terminal,
            interactive=interactive,
            restart=restart,
            log=log,
            resources=resources,
        )
        return ParsedComponent(
            id=self.component.id,
            version=self.component.version,
            spec=spec,
            image_as_given=image,
            warnings=tuple(self.warnings),
            rejected=tuple(self.rejected),
        )

    def _mount(self, source: str, destination: str, propagation: str) -> MountPoint:
        if source == "" or destination == "":
            raise self.fail("source and destination must be set for a mount point")
        try:
            mode = Propagation(propagation)
        except ValueError:
            raise self.fail("propagation mode must be set to one of the supported modes") from None
        return MountPoint(source=source, destination=destination, propagation=mode)

    def _network(
        self, value: str, ports: Sequence[PortMapping], hosts: Sequence[str]
    ) -> NetworkMode:
        if value == "":
            return NetworkMode.BRIDGE
        try:
            network = NetworkMode(value)
        except ValueError:
            raise self.fail(f"unsupported network mode {value}", KEY_NETWORK, value) from None
        if network is NetworkMode.HOST:
            if ports:
                raise self.fail("cannot use port mappings when in host network mode")
            if any(_HOST_IP_RESERVED.fullmatch(host) for host in hosts):
                raise self.fail(
                    "cannot use the host_ip reserved key or any of its modifications when in "
                    "host network mode"
                )
        return network

    def _log(self, config: dict[str, str], max_files: int) -> LogConfig:
        driver_value = config.get(KEY_LOG_DRIVER, "") or LogDriver.JSON_FILE.value
        try:
            driver = LogDriver(driver_value)
        except ValueError:
            raise self.fail(
                "unsupported log driver configuration", KEY_LOG_DRIVER, driver_value
            ) from None
        max_size = config.get(KEY_LOG_MAX_SIZE, "")
        if driver is LogDriver.JSON_FILE:
            max_files = max_files or 2
            if max_files < 1:
                raise self.fail("max log files cannot be < 1", KEY_LOG_MAX_FILES)
            size = self._size(max_size or "100M", KEY_LOG_MAX_SIZE, "max logs size")
        else:
            max_files, size = 0, None
        mode_value = config.get(KEY_LOG_MODE, "") or LogMode.BLOCKING.value
        try:
            mode = LogMode(mode_value)
        except ValueError:
            raise self.fail(
                "unsupported log mode configuration", KEY_LOG_MODE, mode_value
            ) from None
        buffer_size = None
        if mode is LogMode.NON_BLOCKING:
            buffer_text = config.get(KEY_LOG_MAX_BUFFER_SIZE, "") or "1M"
            buffer_size = self._size(buffer_text, KEY_LOG_MAX_BUFFER_SIZE, "max buffer size")
        return LogConfig(
            driver=driver,
            max_files=max_files,
            max_size=size,
            root_dir=config.get(KEY_LOG_PATH, ""),
            mode=mode,
            max_buffer_size=buffer_size,
        )

    def _restart(self, type_value: str, max_retries: int, timeout: int) -> RestartPolicy:
        try:
            policy_type = RestartPolicyType(type_value)
        except ValueError:
            raise self.fail(
                f"unsupported restart policy type {type_value}", KEY_RESTART_POLICY, type_value
            ) from None
        if max_retries < 0:
            raise self.fail(
                "restart policy max retry count cannot be negative", KEY_RESTART_MAX_RETRIES
            )
        if timeout < 0:
            raise self.fail("restart policy retry timeout cannot be negative", KEY_RESTART_TIMEOUT)
        return RestartPolicy(type=policy_type, max_retries=max_retries, timeout=timeout)

    def _size(
        self, text: str, key: str, what: str, *, allow_unlimited: bool = False
    ) -> Size | None:
        """A size key's value (None: "", not set), or Kanto's `invalid format of <what>` error."""
        try:
            return Size.parse(text, allow_unlimited=allow_unlimited) if text else None
        except SizeError:
            raise self.fail(f"invalid format of {what} - {text}", key, text) from None

    def _resources(self, config: dict[str, str]) -> Resources | None:
        memory = config.get(KEY_MEMORY, "")
        reservation = config.get(KEY_MEMORY_RESERVATION, "")
        swap = config.get(KEY_MEMORY_SWAP, "")
        if not (memory or reservation or swap):
            return None
        memory_size = self._size(memory, KEY_MEMORY, "memory")
        reservation_size = self._size(reservation, KEY_MEMORY_RESERVATION, "memory reservation")
        swap_size = self._size(swap, KEY_MEMORY_SWAP, "swap memory", allow_unlimited=True)
        limit = engine_bytes(memory_size)
        reserved = engine_bytes(reservation_size)
        swap_bytes = engine_bytes(swap_size)
        if 0 < limit < _MIN_MEMORY:
            raise self.fail("minimum memory allowed is 3M", KEY_MEMORY, memory)
        if swap_bytes > 0:
            if memory == "":
                raise self.fail(
                    f"swap memory - {swap}, memory must be set as well", KEY_MEMORY_SWAP, swap
                )
            if limit > swap_bytes:
                raise self.fail(
                    f"swap memory - {swap} is less than memory - {memory}", KEY_MEMORY_SWAP, swap
                )
        if reserved > 0 and memory != "" and reserved > limit:
            raise self.fail(
                f"reservation memory - {reservation} must be lower than memory - {memory}",
                KEY_MEMORY_RESERVATION,
                reservation,
            )
        # memorySwap is kept exactly as given: no create-time doubling (our D12 fix).
        return Resources(
            memory=memory_size, memory_reservation=reservation_size, memory_swap=swap_size
        )


def parse_component(component: ComponentWithConfig, *, strict: bool = False) -> ParsedComponent:
    """One component -> its normalized container spec. Raises SpecError (Kanto's text).

    `strict`: a malformed port/device/mount entry raises SpecError instead of being
    ignored with a warning (our-behaviour D7/D8).
    """
    return _parsed(component.id, component.version, tuple(component.config), strict)


@functools.lru_cache(maxsize=1024)
def _parsed(
    component_id: str, version: str, config: tuple[KeyValuePair, ...], strict: bool
) -> ParsedComponent:
    """Parsing is pure, and a device is sent the same components again and again (a no-op
    of 100 parses each of them again): a component is parsed once. (Failures are not kept.)"""
    component = ComponentWithConfig(id=component_id, version=version, config=list(config))
    return _ComponentParser(component, strict).parse()


# --- the desired state ------------------------------------------------------------------------


def _component_problem(component_id: str, text: str) -> str:
    return f"invalid configuration for container {component_id}: {text}"


def _components_error(problems: Sequence[str]) -> DesiredStateError:
    return DesiredStateError(
        "cannot convert desired state components to container configurations: "
        + "; ".join(problems)
    )


def _baselines(
    domain: str, baselines: Sequence[Baseline], names: Sequence[str]
) -> tuple[BaselineSpec, ...]:
    """Kanto's `baselinesWithContainers`: a container belongs to at most one baseline.

    As in Kanto, a baseline naming a container that is not desired, or that an earlier
    baseline (or the same one) already took, is an error.
    """
    prefix = f"{domain}:"
    available = set(names)
    result = []
    for baseline in baselines:
        members = []
        for entry in baseline.components:
            if not entry.startswith(prefix):
                continue  # other domains' components
            name = entry[len(prefix) :]
            if name not in available:
                raise DesiredStateError(
                    "cannot process desired state baselines with containers: "
                    f"problem with baseline {baseline.title}: "
                    f"cannot find container component {entry}"
                )
            available.discard(name)
            members.append(name)
        result.append(BaselineSpec(title=baseline.title, components=tuple(members)))
    return tuple(result)


def _system_containers(config: Sequence[KeyValuePair]) -> tuple[str, ...] | None:
    result: tuple[str, ...] | None = None
    for pair in config:
        if pair.key == KEY_SYSTEM_CONTAINERS:  # the last occurrence wins
            result = tuple(name.strip() for name in pair.value.split(","))
    return result


def parse_desired_state(
    desired: DesiredState,
    domain: str,
    *,
    strict: bool = False,
    max_components: int | None = None,
    unknown_keys: Sequence[str] = (),
) -> ParsedDesiredState:
    """A whole desired state for `domain`. Raises DesiredStateError with Kanto's text.

    `max_components`: the agent's limit (ours): more components are refused at once.
    `unknown_keys`: warnings for keys of the message that its decoding ignored (see
    `cua.api.extra_keys`); they come first among the warnings, and fail strict mode.

    Checks in Kanto's order: one domain, its id, each component (in order), the baselines.
    Two components with one id are an error (ours: Kanto would plan two actions for one
    container name, and the second create fails on any engine).
    """
    if len(desired.domains) != 1:
        raise DesiredStateError(
            f"one domain expected in desired state specification, but got {len(desired.domains)}"
        )
    the_domain = desired.domains[0]
    if the_domain.id != domain:
        raise DesiredStateError(
            f"domain id mismatch - expecting {domain}, received {the_domain.id}"
        )
    if max_components is not None and len(the_domain.components) > max_components:
        raise DesiredStateError(
            f"the desired state has {len(the_domain.components)} components, more than the"
            f" limit of {max_components} (update_agent.max_components)"
        )
    containers: list[ParsedComponent] = []
    seen: set[str] = set()
    # Strict mode names every malformed entry of every component (ours; Kanto has no strict
    # mode). A Kanto validation error still ends the check at its component, as in Kanto.
    problems: list[str] = []
    for component in the_domain.components:
        try:
            parsed = parse_component(component)
        except SpecError as exc:
            problems.append(_component_problem(component.id, str(exc)))
            raise _components_error(problems) from exc
        if strict and parsed.rejected:
            problems.append(_component_problem(parsed.id, "; ".join(parsed.rejected)))
        if parsed.id in seen:
            problems.append(
                _component_problem(
                    component.id, "another component of the desired state has the same id"
                )
            )
            raise _components_error(problems)
        seen.add(parsed.id)
        containers.append(parsed)
    if problems:
        raise _components_error(problems)
    if strict and unknown_keys:
        raise DesiredStateError("strict mode: " + "; ".join(unknown_keys))
    baselines = _baselines(domain, desired.baselines, [c.id for c in containers])
    return ParsedDesiredState(
        containers=tuple(containers),
        baselines=baselines,
        system_containers=_system_containers(the_domain.config),
        warnings=(*unknown_keys, *(w for c in containers for w in c.warnings)),
    )
