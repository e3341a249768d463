"""The agent's settings: a Kanto container-management `config.json`, then flags on top.

A Leda or Kanto `config.json` works unchanged (spec §7): its `update_agent` and `connection`
sections are read, every other section is ignored, and `update_agent.enable` is ignored too
(this program exists to run the agent). Our own keys live in `update_agent` beside Kanto's.
Kanto's duration strings (`20s`, `250ms`) fall back to the default when invalid, as Kanto
does; everything else that is invalid is a `ConfigError` whose message names the key or flag
and what is wrong, never a value that could be a secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from cua.broker import (
    BrokerTlsFiles,
    BrokerUrlError,
    MqttOptions,
    MqttVersion,
    parse_broker_url,
    tls_context,
)
from cua.containers.gosyntax import Size, SizeError, parse_go_duration
from cua.settings import (
    MAX_ACTIVITY_ID_LENGTH,
    MAX_COMPONENTS,
    MAX_MESSAGE_SIZE,
    DownloadSettings,
    Limits,
    Manage,
    Mode,
    RegistryCredentials,
    UpdateSettings,
)
from cua.typos import unknown_keys
from cua.validation import Invalid, convert

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_STATE_DIR",
    "AgentConfig",
    "ConfigError",
    "Overrides",
    "load_config",
]

log = logging.getLogger(__name__)

DEFAULT_BROKER_URL = "tcp://localhost:1883"
DEFAULT_STATE_DIR = "/var/lib/cua"
ENGINE_SCHEMES = frozenset({"unix", "tcp", "http", "https"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """Invalid configuration. The message is one line: where, and what is wrong."""


# --- the file -----------------------------------------------------------------------------------


# Each section repeats `frozen=True`: msgspec inherits it, mypy's dataclass view does not.
class _FileModel(msgspec.Struct, kw_only=True, frozen=True):
    """A section of the file: unknown keys ignored (with a warning), types strict."""


def _hidden_repr(model: _FileModel, secret: str) -> str:
    shown = ", ".join(
        f"{name}={getattr(model, name)!r}" for name in model.__struct_fields__ if name != secret
    )
    return f"{type(model).__name__}({shown})"


class _RegistryLogin(_FileModel, frozen=True):
    username: str = ""
    password: str = ""

    def __repr__(self) -> str:
        return _hidden_repr(self, "password")


class _UpdateAgentSection(_FileModel, frozen=True):
    enable: bool = False  # Kanto's switch; ignored here, we always run
    domain: str = "containers"
    system_containers: list[str] = []
    verbose_inventory_report: bool = False
    # ours
    mode: Mode = Mode.STANDALONE
    manage: Manage = Manage.LABELLED
    strict: bool = False
    engine: str = ""
    state_dir: str = DEFAULT_STATE_DIR
    registry_mirrors: dict[str, str] = {}
    registries: dict[str, _RegistryLogin] = {}
    pull_always: bool = False
    download: str = "agent"
    download_rate_limit: str | int = ""
    download_cache_max: str | int = "2G"
    stop_timeout: str | int | float | None = None
    activation_window: str | int | float | None = None
    activation_timeout: str | int | float | None = None
    mqtt_version: MqttVersion = MqttVersion.V311
    # limits of one incoming message (cua.settings.Limits)
    max_message_size: Annotated[int, msgspec.Meta(ge=1024)] = MAX_MESSAGE_SIZE
    max_activity_id_length: Annotated[int, msgspec.Meta(ge=1)] = MAX_ACTIVITY_ID_LENGTH
    max_components: Annotated[int, msgspec.Meta(ge=1)] = MAX_COMPONENTS


class _TransportSection(_FileModel, frozen=True):
    root_ca: str = ""
    client_cert: str = ""
    client_key: str = ""


Duration = str | int | float | None


class _ConnectionSection(_FileModel, frozen=True):
    broker_url: str = DEFAULT_BROKER_URL
    keep_alive: Duration = None
    disconnect_timeout: Duration = None
    client_username: str = ""
    client_password: str = ""
    connect_timeout: Duration = None
    acknowledge_timeout: Duration = None
    subscribe_timeout: Duration = None
    unsubscribe_timeout: Duration = None
    transport: _TransportSection = msgspec.field(default_factory=_TransportSection)

    def __repr__(self) -> str:
        return _hidden_repr(self, "client_password")


class _ConfigFile(_FileModel, frozen=True):
    update_agent: _UpdateAgentSection = msgspec.field(default_factory=_UpdateAgentSection)
    connection: _ConnectionSection = msgspec.field(default_factory=_ConnectionSection)


_DURATION_DEFAULTS = {
    "keep_alive": 20.0,
    "disconnect_timeout": 0.25,
    "connect_timeout": 30.0,
    "acknowledge_timeout": 15.0,
    "subscribe_timeout": 15.0,
    "unsubscribe_timeout": 5.0,
}


def _go_seconds(text: str) -> float:
    """A Go duration in seconds; -1.0 when it is not one."""
    try:
        return parse_go_duration(text)
    except ValueError:
        return -1.0


def _seconds(key: str, raw: Duration, default: float) -> float:
    """An `update_agent` duration of ours: a Go duration string or seconds; invalid is a
    configuration error (unlike Kanto's connection durations, below)."""
    if raw is None:
        return default
    seconds = _go_seconds(raw) if isinstance(raw, str) else float(raw)
    if seconds < 0:
        raise ConfigError(f'update_agent.{key}: must be a duration like "30s" or seconds >= 0')
    return seconds


def _duration(section: str, key: str, raw: Duration, default: float) -> float:
    """Kanto's rule: a missing or invalid duration means the default (with a warning here)."""
    if raw is None:
        return default
    if isinstance(raw, str):
        seconds = _go_seconds(raw)
        if seconds >= 0:
            return seconds
    log.warning(
        '%s.%s: not a valid duration (like "20s" or "250ms"); using the default %gs',
        section,
        key,
        default,
    )
    return default


def _describe(error: Invalid) -> str:
    location, text = error.problems[0]
    where = ".".join(str(part) for part in location)
    more = len(error.problems) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {text}{suffix}"


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line flags; None / empty = not given (the file or the default applies)."""

    broker: str | None = None
    engine: str | None = None
    domain: str | None = None
    mode: str | None = None
    manage: str | None = None
    system_containers: Sequence[str] = ()
    verbose_inventory: bool = False
    strict: bool = False
    state_dir: str | None = None
    log_level: str | None = None
    mqtt_version: str | None = None


def _bytes_setting(key: str, raw: str | int, default: int) -> int:
    """A size setting: bytes as a number, or a string like "2MB", "512k", "1.5G" (binary
    units); "" for the default."""
    if isinstance(raw, int):
        value = raw
    elif not raw.strip():
        return default
    else:
        # Kanto's size syntax (`2M`, `512k`, `1.5g`), a trailing B or iB allowed (`2MB`)
        text = re.sub(r"(?i)(?<=[kmg])i?b$", "", raw.strip())
        try:
            value = Size.parse(text).engine_bytes
        except SizeError:
            value = -1
    if value < 0:
        raise ConfigError(f'update_agent.{key}: must be a size like "2MB" or bytes >= 0')
    return value


def _download_settings(ua: _UpdateAgentSection) -> DownloadSettings:
    if ua.download not in ("agent", "engine"):
        raise ConfigError('update_agent.download: must be "agent" or "engine"')
    return DownloadSettings(
        by_agent=ua.download == "agent",
        rate_limit=_bytes_setting("download_rate_limit", ua.download_rate_limit, 0),
        cache_max=_bytes_setting("download_cache_max", ua.download_cache_max, 2 << 30),
    )


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent needs, validated."""

    update: UpdateSettings
    mqtt: MqttOptions
    engine_url: str  # "" = the engine's own default (DOCKER_HOST, then the system socket)
    state_dir: Path
    registry_mirrors: Mapping[str, str] = field(default_factory=dict)
    registries: Mapping[str, RegistryCredentials] = field(default_factory=dict)
    log_level: str = "INFO"
    download: DownloadSettings = field(default_factory=DownloadSettings)

    @property
    def domain(self) -> str:
        return self.update.domain


def _check_engine_url(url: str, where: str) -> str:
    if not url or url.startswith("/"):  # a bare path is a unix socket
        return url
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ENGINE_SCHEMES:
        raise ConfigError(
            f"{where}: unsupported engine URL scheme {scheme or '(none)'!r}"
            " (expected unix:///path/to/docker.sock, a socket path, tcp://host:port,"
            " http://host:port or https://host:port)"
        )
    return url


def _check_domain(domain: str, where: str) -> str:
    if not domain.strip():
        raise ConfigError(f"{where}: the domain must not be empty")
    if any(ch in domain for ch in "+#/") or any(ch.isspace() for ch in domain):
        raise ConfigError(f"{where}: the domain must not contain '/', '+', '#' or spaces")
    return domain


def _enum_flag(
    enum_type: type[Mode] | type[Manage] | type[MqttVersion], value: str, flag: str
) -> Any:
    try:
        return enum_type(value.lower())
    except ValueError:
        choices = ", ".join(member.value for member in enum_type)
        raise ConfigError(f"{flag}: {value!r} is not one of {choices}") from None


def read_config_file(path: Path) -> _ConfigFile:
    """Parse the file; raises ConfigError naming the file and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise ConfigError(f"--config: {path}: {reason}") from None
    if not text.strip():
        return _ConfigFile()
    try:
        data = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    try:
        parsed = convert(data, _ConfigFile, strict=True)
    except Invalid as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    for warning in config_unknown_keys(data):
        log.warning("%s: %s", path, warning)
    return parsed


def config_unknown_keys(data: Any) -> list[str]:
    """Unknown keys of the sections this program reads (`update_agent`, `connection`), each
    with the closest known key. Kanto ignores them, so do we, with a warning."""
    if not isinstance(data, dict):
        return []
    found: list[str] = []
    for name, model in (
        ("update_agent", _UpdateAgentSection),
        ("connection", _ConnectionSection),
    ):
        section = data.get(name)
        if isinstance(section, dict):
            found += unknown_keys(section, model.__struct_fields__, name)
    transport = (data.get("connection") or {}).get("transport")
    if isinstance(transport, dict):
        found += unknown_keys(
            transport, _TransportSection.__struct_fields__, "connection.transport"
        )
    return found


def load_config(path: Path | None, overrides: Overrides = Overrides()) -> AgentConfig:
    """The file (if any) with the flags on top. Raises ConfigError."""
    file = read_config_file(path) if path is not None else _ConfigFile()
    ua = file.update_agent
    conn = file.connection

    domain = _check_domain(
        overrides.domain if overrides.domain is not None else ua.domain,
        "--domain" if overrides.domain is not None else "update_agent.domain",
    )
    mode = _enum_flag(Mode, overrides.mode, "--mode") if overrides.mode else ua.mode
    manage = _enum_flag(Manage, overrides.manage, "--manage") if overrides.manage else ua.manage
    version = (
        _enum_flag(MqttVersion, overrides.mqtt_version, "--mqtt-version")
        if overrides.mqtt_version
        else ua.mqtt_version
    )
    system_containers = tuple(overrides.system_containers) or tuple(ua.system_containers)
    for name in system_containers:
        if not name.strip():
            where = (
                "--system-container"
                if overrides.system_containers
                else "update_agent.system_containers"
            )
            raise ConfigError(f"{where}: a system container name must not be empty")

    defaults = UpdateSettings()
    settings = UpdateSettings(
        domain=domain,
        mode=mode,
        manage=manage,
        system_containers=system_containers,
        strict=overrides.strict or ua.strict,
        verbose_inventory=overrides.verbose_inventory or ua.verbose_inventory_report,
        pull_always=ua.pull_always,
        stop_grace_period=_seconds("stop_timeout", ua.stop_timeout, defaults.stop_grace_period),
        activation_window=_seconds(
            "activation_window", ua.activation_window, defaults.activation_window
        ),
        activation_timeout=_seconds(
            "activation_timeout", ua.activation_timeout, defaults.activation_timeout
        ),
        limits=Limits(
            max_message_size=ua.max_message_size,
            max_activity_id_length=ua.max_activity_id_length,
            max_components=ua.max_components,
        ),
    )

    broker_url = overrides.broker if overrides.broker is not None else conn.broker_url
    broker_where = "--broker" if overrides.broker is not None else "connection.broker_url"
    try:
        broker = parse_broker_url(broker_url)
    except BrokerUrlError as exc:
        raise ConfigError(f"{broker_where}: {exc}") from None

    transport = conn.transport
    tls = BrokerTlsFiles(transport.root_ca, transport.client_cert, transport.client_key)
    if tls.client_key and not tls.client_cert:
        raise ConfigError("connection.transport.client_key: set without client_cert")
    if broker.tls:
        _check_tls(tls)
    durations = {
        key: _duration("connection", key, getattr(conn, key), default)
        for key, default in _DURATION_DEFAULTS.items()
    }
    mqtt = MqttOptions(
        broker=broker,
        username=conn.client_username,
        password=conn.client_password,
        tls=tls,
        version=version,
        keep_alive=durations["keep_alive"],
        connect_timeout=durations["connect_timeout"],
        acknowledge_timeout=durations["acknowledge_timeout"],
        subscribe_timeout=durations["subscribe_timeout"],
        unsubscribe_timeout=durations["unsubscribe_timeout"],
        disconnect_timeout=durations["disconnect_timeout"],
    )

    engine_url = _check_engine_url(
        overrides.engine if overrides.engine is not None else ua.engine,
        "--engine" if overrides.engine is not None else "update_agent.engine",
    )
    for host, mirror in ua.registry_mirrors.items():
        if not host.strip() or not mirror.strip() or "/" in host:
            raise ConfigError(
                f"update_agent.registry_mirrors: entry {host!r} must map a registry host"
                " to a mirror host[:port]"
            )
    registries = {}
    for host, login in ua.registries.items():
        if not login.username:
            raise ConfigError(f"update_agent.registries.{host}.username: must not be empty")
        registries[host] = RegistryCredentials(login.username, login.password)

    log_level = (overrides.log_level or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"--log-level: {overrides.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    state_dir = overrides.state_dir if overrides.state_dir is not None else ua.state_dir
    if not state_dir.strip():
        raise ConfigError("update_agent.state_dir: must not be empty")

    return AgentConfig(
        update=settings,
        mqtt=mqtt,
        engine_url=engine_url,
        state_dir=Path(state_dir),
        registry_mirrors=dict(ua.registry_mirrors),
        registries=registries,
        log_level=log_level,
        download=_download_settings(ua),
    )


def _check_tls(tls: BrokerTlsFiles) -> None:
    """Load the TLS files once now, so that a bad path is a start error, not a retry loop."""
    for key, value in (
        ("root_ca", tls.root_ca),
        ("client_cert", tls.client_cert),
        ("client_key", tls.client_key),
    ):
        if value and not os.path.isfile(value):
            raise ConfigError(f"connection.transport.{key}: {value}: no such file")
    import ssl  # only with TLS (`cua validate` does without it)

    try:
        tls_context(tls)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise ConfigError(f"connection.transport: cannot load the TLS files: {reason}") from None
