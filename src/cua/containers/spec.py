"""The normalized container spec: what a desired container (or a current one) is.

A `ContainerSpec` is the defaults-filled form of a component's Kanto config keys
(spec §2.3, §2.4). It is immutable and engine-neutral: the engine adapter maps it to its
own create body, the comparison (§3.3) works on two of them, and the label encoding stores
it on the containers this agent creates.

Field values follow Kanto's normalized representation, so that comparison and the
inventory parameters (§5.4) are exact: sizes stay the strings that were given (`"100M"`),
the restart timeout is in seconds, the log buffer size is `""` in blocking mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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
    max_size: str = "100M"  # "" when driver is none
    root_dir: str = ""  # `logPath`; Docker has no equivalent, kept in our labels
    mode: LogMode = LogMode.BLOCKING
    max_buffer_size: str = ""  # "1M" default in non-blocking mode, "" in blocking mode


@dataclass(frozen=True, slots=True)
class Resources:
    """Memory limits as given (size strings); "" means not set. `memory_swap` may be "-1"."""

    memory: str = ""
    memory_reservation: str = ""
    memory_swap: str = ""


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
