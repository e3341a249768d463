"""Where and how to reach the MQTT broker: its address, TLS files and connection options.

Plain values and their parsing, no I/O beyond loading TLS files into a context: the
configuration (`cua.config`) builds them from Kanto's `connection` section (spec §7), the
connection (`cua.mqtt`) uses them. Kanto's agent ignores the TLS settings (D2); we honour
them.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import ssl

__all__ = [
    "BrokerAddress",
    "BrokerTlsFiles",
    "BrokerUrlError",
    "MqttOptions",
    "MqttVersion",
    "parse_broker_url",
    "tls_context",
]

PLAIN_SCHEMES = frozenset({"tcp", "mqtt"})
TLS_SCHEMES = frozenset({"ssl", "mqtts", "tls"})
DEFAULT_PORTS = {False: 1883, True: 8883}
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024  # each of the MQTT queues, in and out
DEFAULT_SEND_WINDOW = 16  # QoS 1 publishes outstanding at once (MqttConnection)


class BrokerUrlError(ValueError):
    """A broker URL that cannot be used; the message says why (never a password)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """`tcp://`, `mqtt://` (plain) or `ssl://`, `mqtts://`, `tls://` (TLS) `host[:port]`.

    The port defaults to 1883 (plain) or 8883 (TLS). Credentials in the URL are not
    accepted: they belong in `client_username`/`client_password`, where they are not logged.
    """
    text = url.strip()
    if "://" not in text:
        raise BrokerUrlError(
            "missing scheme (expected tcp://, mqtt://, ssl://, mqtts:// or tls://host:port)"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in PLAIN_SCHEMES | TLS_SCHEMES:
        raise BrokerUrlError(
            f"unsupported scheme {scheme!r} (expected tcp, mqtt, ssl, mqtts or tls)"
        )
    if parts.username is not None or parts.password is not None:
        raise BrokerUrlError(
            "credentials in the URL are not supported; use the username/password settings"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerUrlError("unexpected path or query after host:port")
    host = parts.hostname
    if not host:
        raise BrokerUrlError("missing host")
    tls = scheme in TLS_SCHEMES
    try:
        port = parts.port
    except ValueError:
        raise BrokerUrlError("invalid port") from None
    if port == 0:
        raise BrokerUrlError("invalid port 0")
    return BrokerAddress(host=host, port=port if port is not None else DEFAULT_PORTS[tls], tls=tls)


class MqttVersion(enum.StrEnum):
    V311 = "3.1.1"
    V5 = "5"


@dataclass(frozen=True, slots=True)
class BrokerTlsFiles:
    """PEM file paths; "" = not set (the system's CAs verify the broker then)."""

    root_ca: str = ""
    client_cert: str = ""
    client_key: str = ""


def tls_context(files: BrokerTlsFiles) -> ssl.SSLContext:
    """A client TLS context that verifies the broker (and presents our certificate).

    Raises OSError / ssl.SSLError when a file is missing or not a usable PEM.
    """
    import ssl  # here: the tools that never connect (`cua validate`) do without it

    context = ssl.create_default_context(cafile=files.root_ca or None)
    if files.client_cert:
        context.load_cert_chain(files.client_cert, files.client_key or None)
    return context


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """How to connect. Timeouts in seconds (Kanto's `connection` section, spec §7)."""

    broker: BrokerAddress
    username: str = ""
    password: str = field(default="", repr=False)
    tls: BrokerTlsFiles = field(default_factory=BrokerTlsFiles)
    version: MqttVersion = MqttVersion.V311
    keep_alive: float = 20.0
    connect_timeout: float = 30.0
    acknowledge_timeout: float = 15.0
    subscribe_timeout: float = 15.0
    unsubscribe_timeout: float = 5.0
    disconnect_timeout: float = 0.25
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    queue_limit: int = 10_000  # outgoing messages queued at most
    queue_bytes: int = DEFAULT_QUEUE_BYTES  # outgoing payload bytes queued at most
    # QoS 1 messages sent and not yet acknowledged at most (paho's own limit is 20)
    send_window: int = DEFAULT_SEND_WINDOW
    incoming_bytes: int = DEFAULT_QUEUE_BYTES  # received payload bytes not yet handled
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
