"""The engine's registry settings, which the agent's downloads follow as the engine's own
pulls do: its insecure registries (Docker's `insecure-registries`) and its mirrors of
Docker Hub (`registry-mirrors`), read from `GET /info` `RegistryConfig`.

A registry is insecure when the engine lists it by name (`IndexConfigs["<host[:port]>"]`
with `Secure` false: a `host[:port]` entry of `insecure-registries`) or, not listed by
name, when its host is an address in one of `InsecureRegistryCIDRs` (a CIDR entry;
127.0.0.0/8 by default) or a name that resolves to one. As Docker does, the agent speaks
HTTPS to an insecure registry without checking its certificate, and plain HTTP once it
answers in plain HTTP (`registry.RegistryClient`).

The mirrors (`RegistryConfig.Mirrors`, URLs) stand in for Docker Hub only, as the engine
uses them: an image of `docker.io` is fetched from the first mirror that has it, then from
Docker Hub itself (`fetch.AgentDownloader`); an `http://` mirror is spoken to in plain HTTP.
The agent's own `registry_mirrors` entry for `docker.io`, when there is one, comes instead.

Its HTTP proxy (`HttpsProxy`, `HttpProxy`, `NoProxy`) is the agent's too when the agent's
environment names none (`proxy.Proxies.from_engine_info`; `registry.RegistryClient`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cua.download.proxy import DIRECT, Proxies

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str], Awaitable[list[str]]]
"""A host name's addresses (none when it does not resolve)."""

DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})  # its names


async def resolve(name: str) -> list[str]:
    """The addresses the system resolves `name` to (none on failure)."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [str(entry[4][0]) for entry in found]


@dataclass(frozen=True, slots=True)
class Mirror:
    """A mirror of Docker Hub: where it is (`host[:port]`) and whether in plain HTTP."""

    host: str
    plain: bool


@dataclass(frozen=True, slots=True)
class EngineRegistries:
    """`listed`: `host[:port]` -> secure, as the engine lists registries by name;
    `networks`: the insecure address ranges; `mirrors`: Docker Hub's, in order;
    `proxies`: the engine's HTTP proxy."""

    listed: Mapping[str, bool]
    networks: tuple[Network, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    proxies: Proxies = DIRECT

    @classmethod
    def from_engine_info(cls, info: Mapping[str, Any]) -> EngineRegistries:
        """From `GET /info`; a missing or malformed part lists nothing."""
        try:
            proxies = Proxies.from_engine_info(info)
        except ValueError as error:
            log.warning("the engine's proxy setting is not understood (%s): not followed", error)
            proxies = DIRECT
        config = info.get("RegistryConfig")
        if not isinstance(config, Mapping):
            return cls({}, proxies=proxies)
        indexes = config.get("IndexConfigs")
        listed = {
            str(name): bool(entry.get("Secure", True))
            for name, entry in (indexes.items() if isinstance(indexes, Mapping) else ())
            if isinstance(entry, Mapping)
        }
        networks = []
        for cidr in config.get("InsecureRegistryCIDRs") or ():
            try:
                networks.append(ipaddress.ip_network(str(cidr), strict=False))
            except ValueError:
                continue
        mirrors = []
        for url in config.get("Mirrors") or ():
            parts = urlsplit(str(url))
            if parts.scheme in ("http", "https") and parts.netloc:
                mirrors.append(Mirror(parts.netloc, plain=parts.scheme == "http"))
        return cls(listed, tuple(networks), tuple(mirrors), proxies)

    def mirrors_of(self, registry: str) -> list[str]:
        """The hosts to try before `registry`, in order: the mirrors for Docker Hub, none
        for any other registry."""
        return [m.host for m in self.mirrors] if registry in DOCKER_HUB else []

    @property
    def plain_hosts(self) -> frozenset[str]:
        """The mirrors named with `http://`."""
        return frozenset(m.host for m in self.mirrors if m.plain)

    async def is_insecure(self, netloc: str, resolver: Resolver | None) -> bool:
        """Whether the registry at `netloc` (`host[:port]`) is insecure; `resolver`: how a
        host name becomes addresses (None: names match by name only)."""
        if netloc in self.listed:
            return not self.listed[netloc]
        if not self.networks:
            return False
        host = urlsplit(f"//{netloc}").hostname or ""
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:
            addresses = await resolver(host) if resolver is not None else []
        return any(self._in_networks(address) for address in addresses)

    def _in_networks(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


NONE = EngineRegistries({})
