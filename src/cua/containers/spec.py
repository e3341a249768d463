"""The normalized container spec: what a desired container (or a current one) is.

A `ContainerSpec` is the defaults-filled form of a component's Kanto config keys
(spec §2.3, §2.4). It is immutable and engine-neutral: the engine adapter maps it to its
own create body, the comparison (§3.3) works on two of them, and the label encoding stores
it on the containers this agent creates.

Field values follow Kanto's normalized representation, so that comparison and the
inventory parameters (§5.4) are exact: a size is a `Size`, parsed once, that keeps the text
that was given (`"100M"`, compared and reported as such) with the bytes an engine is given;
None is "not set" (Kanto's `""`), e.g. the log buffer size in blocking mode. The restart
timeout is in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from cua.containers.gosyntax import Size

DEFAULT_LOG_MAX_SIZE = Size.parse("100M")
DEFAULT_LOG_MAX_BUFFER_SIZE = Size.parse("1M")  # in non-blocking mode


def size_text(size: Size | None) -> str:
    """A spec's size as Kanto writes it (compared, reported, recorded in our labels): the
    text as given, "" when not set."""
    return "" if size is None else size.text


def engine_bytes(size: Size | None) -> int:
    """A spec's size as an engine counts it: 0 when not set (Docker's and CM's "unset"),
    -1 when unlimited."""
    return 0 if size is None else size.engine_bytes


def recorded_size(text: str) -> Size | None:
    """The inverse of `size_text` for a size we recorded ourselves (labels, journal):
    "" is not set, "-1" unlimited. Raises SizeError (a ValueError)."""
    return Size.parse(text, allow_unlimited=True) if text else None


class NetworkMode(StrEnum):
    BRIDGE = "bridge"
    HOST = "host"


class RestartPolicyType(StrEnum):
    NO = "no"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"
    ON_FAILURE = "on-failure"


class LogDriver(StrEnum):
    JSON_FILE = "json-file"
    NONE = "none"


class LogMode(StrEnum):
    BLOCKING = "blocking"
    NON_BLOCKING = "non-blocking"


class Propagation(StrEnum):
    RPRIVATE = "rprivate"
    PRIVATE = "private"
    RSHARED = "rshared"
    SHARED = "shared"
    RSLAVE = "rslave"
    SLAVE = "slave"


@dataclass(frozen=True, slots=True)
class PortMapping:
    """`[<host-ip>:]<host-port>[-<host-port-end>]:<container-port>[/<proto>]`."""

    host_port: int
    container_port: int
    host_port_end: int = 0  # normalized: equal to host_port when no range was given
    host_ip: str = "0.0.0.0"
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class DeviceMapping:
    """`<host_path>:<container_path>[:<perms>]`, perms from `r`, `w`, `m`."""

    host_path: str
    container_path: str
    permissions: str = "rwm"


@dataclass(frozen=True, slots=True)
class MountPoint:
    """`<source>:<destination>[:<propagation>]` (a bind mount)."""

    source: str
    destination: str
    propagation: Propagation = Propagation.RPRIVATE


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    type: RestartPolicyType = RestartPolicyType.UNLESS_STOPPED
    max_retries: int = 0
    timeout: int = 0  # seconds; Docker has no equivalent, kept in our labels


@dataclass(frozen=True, slots=True)
class LogConfig:
    driver: LogDriver = LogDriver.JSON_FILE
    max_files: int = 2  # 0 when driver is none
    max_size: Size | None = DEFAULT_LOG_MAX_SIZE  # None when driver is none
    root_dir: str = ""  # `logPath`; Docker has no equivalent, kept in our labels
    mode: LogMode = LogMode.BLOCKING
    max_buffer_size: Size | None = None  # 1M default in non-blocking mode, None in blocking


@dataclass(frozen=True, slots=True)
class Resources:
    """Memory limits as given; None means not set. `memory_swap` may be `UNLIMITED` ("-1")."""

    memory: Size | None = None
    memory_reservation: Size | None = None
    memory_swap: Size | None = None


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    """Kanto's container config block (env and cmd): present only when one was given."""

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """A container, normalized with Kanto's defaults (spec §2.4)."""

    name: str
    image: str
    host_name: str = ""  # normalized: `<name>-host`
    domain_name: str = ""  # normalized: `<name>-domain`
    config: ProcessConfig | None = None
    devices: tuple[DeviceMapping, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    mounts: tuple[MountPoint, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    network: NetworkMode = NetworkMode.BRIDGE
    privileged: bool = False
    terminal: bool = False
    interactive: bool = False
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    log: LogConfig = field(default_factory=LogConfig)
    resources: Resources | None = None

    @property
    def env(self) -> tuple[str, ...]:
        return self.config.env if self.config else ()

    @property
    def cmd(self) -> tuple[str, ...]:
        return self.config.cmd if self.config else ()
