"""The HTTP proxy the agent's downloads go through, from the agent's own environment as any
program (and dockerd) reads it: `HTTPS_PROXY` for https:// registries, `HTTP_PROXY` for
http:// ones, `NO_PROXY` for those reached directly (host names, `.domain` suffixes, `*`,
addresses and CIDRs); lower-case names as well. Registries on loopback never go through it.
When the agent's environment sets none of them, the engine's own settings, as `GET /info`
tells them (`from_engine_info`), so that the agent reaches registries as the engine's pulls
do; the engine hides a proxy's login there (`xxxxx:xxxxx`): such a proxy is tried without
one, and its refusal (407) says where the login goes.

A connection goes through a CONNECT tunnel (`tunnel`), for http:// registries too (the
agent's requests then go over it as they would directly); a `user:password@` in the
proxy's URL is sent as `Proxy-Authorization: Basic`, and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from cua.download.link import SocketConnector

HEAD_LIMIT = 16384  # bytes of a proxy's answer to CONNECT, at most
HIDDEN_LOGIN = "xxxxx:xxxxx"  # what `GET /info` shows in place of the login of a proxy
ENGINE_SETTINGS = (
    ("HTTPS_PROXY", "HttpsProxy"),
    ("HTTP_PROXY", "HttpProxy"),
    ("NO_PROXY", "NoProxy"),
)


class ProxyError(Exception):
    """The proxy refused the tunnel (`status`: its answer's; 0: no HTTP answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: where (`host`, `port`) and the login it wants, if any."""

    host: str
    port: int
    authorization: str = field(default="", repr=False)  # `Basic ...`, or ""
    login_hidden: bool = False  # the engine's, whose login the engine does not tell

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """`http://[user:password@]host[:port]` (no scheme: http); ValueError otherwise."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"proxy {_without_login(url)!r}: not http://host[:port]")
        authorization = ""
        if parts.username is not None:
            login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(login.encode()).decode()
        return cls(parts.hostname, parts.port or 80, authorization)


@dataclass(frozen=True, slots=True)
class Proxies:
    """The proxy per scheme of registry URL (None: direct), and what goes direct."""

    https: Proxy | None = None
    http: Proxy | None = None
    direct: tuple[str, ...] = ()  # NO_PROXY's entries

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Proxies:
        """From `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` (or their lower-case names, which
        win); ValueError naming a variable that is not a proxy URL."""
        found: dict[str, str] = {}
        for name, value in environ.items():
            key = name.lower()
            named = key in ("https_proxy", "http_proxy", "no_proxy") and bool(value)
            if named and (name == key or key not in found):
                found[key] = value
        proxies: dict[str, Proxy | None] = {}
        for scheme in ("https", "http"):
            url = found.get(f"{scheme}_proxy", "")
            try:
                proxies[scheme] = Proxy.parse(url) if url else None
            except ValueError as error:
                raise ValueError(f"{scheme.upper()}_PROXY: {error}") from None
        direct = tuple(e.strip() for e in found.get("no_proxy", "").split(",") if e.strip())
        return cls(proxies["https"], proxies["http"], direct)

    @classmethod
    def from_engine_info(cls, info: Mapping[str, Any]) -> Proxies:
        """The engine's (`GET /info` `HttpsProxy`, `HttpProxy`, `NoProxy`); a proxy whose
        login the engine hides is `login_hidden`; ValueError naming a malformed one."""
        proxies = cls.from_environment(
            {name: str(info.get(key) or "") for name, key in ENGINE_SETTINGS}
        )
        hidden = "Basic " + base64.b64encode(HIDDEN_LOGIN.encode()).decode()

        def unmasked(proxy: Proxy | None) -> Proxy | None:
            if proxy is None or proxy.authorization != hidden:
                return proxy
            return replace(proxy, authorization="", login_hidden=True)

        return cls(unmasked(proxies.https), unmasked(proxies.http), proxies.direct)

    def describe(self) -> str:
        """Which proxy for which registries, in words (no login)."""
        parts = [
            f"proxy {proxy.address} for {scheme}:// registries"
            for scheme, proxy in (("https", self.https), ("http", self.http))
            if proxy is not None
        ]
        if not parts:
            return "no proxy"
        if self.direct:
            parts.append(f"not for {', '.join(self.direct)}")
        return ", ".join(parts)

    def for_url(self, scheme: str, host: str) -> Proxy | None:
        """The proxy for a registry at `host` (no port) spoken to in `scheme`."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or self._goes_direct(host):
            return None
        return proxy

    def _goes_direct(self, host: str) -> bool:
        """NO_PROXY as curl and Go read it: `*`; a name, which covers its subdomains too
        (`example.com`, `.example.com`, `*.example.com`; a `:port` is ignored); an address
        or a CIDR covering the registry's address."""
        host = host.lower().rstrip(".")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in self.direct:
            if entry == "*":
                return True
            if address is not None:
                try:
                    if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                        return True
                except ValueError:
                    pass
                continue
            name = entry.lower().removeprefix("*").lstrip(".").rstrip(".")
            if name.count(":") == 1:
                name = name.split(":", 1)[0]
            if name and (host == name or host.endswith("." + name)):
                return True
        return False


DIRECT = Proxies()  # no proxy


def tunnel(proxy: Proxy, connect: SocketConnector | None) -> SocketConnector:
    """A connector whose sockets reach (host, port) through a CONNECT tunnel of `proxy`
    (reached by `connect`, None: the event loop's, with name resolution)."""

    async def through(host: str, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        if connect is not None:
            sock = await connect(proxy.host, proxy.port)
        else:
            sock = await _open(proxy.host, proxy.port)
        try:
            target = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
            lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
            if proxy.authorization:
                lines.append(f"Proxy-Authorization: {proxy.authorization}")
            await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                # one byte at a time past the head's first bytes: nothing of the tunnel's
                # own bytes may be read here (none come before the agent speaks, normally)
                data = await loop.sock_recv(sock, 1 if len(head) >= 12 else 12 - len(head))
                if not data:
                    raise ProxyError(f"proxy {proxy.address} closed the connection")
                head += data
                if len(head) > HEAD_LIMIT:
                    raise ProxyError(f"proxy {proxy.address} sent no end of its answer")
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if not 200 <= status < 300:
                hint = ""
                if status == 407 and proxy.login_hidden:
                    hint = (
                        " (it is the engine's proxy, whose login the engine does not tell: "
                        "give the agent HTTPS_PROXY and HTTP_PROXY with the login in its "
                        "environment)"
                    )
                raise ProxyError(
                    f"proxy {proxy.address} refused the tunnel to {target}: {status_line}{hint}",
                    status,
                )
        except BaseException:
            sock.close()
            raise
        return sock

    return through


async def _open(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to (host, port): each of its addresses in turn."""
    loop = asyncio.get_running_loop()
    failure: OSError = OSError(f"{host}: no address")
    for family, kind, protocol, _, address in await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, protocol)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as error:
            sock.close()
            failure = error
            continue
        return sock
    raise failure


def _without_login(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
