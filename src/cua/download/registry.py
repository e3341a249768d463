"""The OCI distribution API, the agent's side: manifests and blobs, with the registry's auth.

HTTP/1.1 on h11 (the library the engine adapter uses; no second HTTP stack) over
`link.Link`s, which hand a blob's bytes over without copying them. Connections are kept
alive: a request goes on an idle connection to the same host when there is one (one TLS
handshake for the manifest, the config and the blobs of a pull on a slow link, not one
each), kept at most `IDLE_KEEP` s; a kept connection the registry closed meanwhile is
replaced once, on the spot (every request is a GET). HTTPS (verified
against the system's CAs) for every registry except loopback ones (`localhost`,
`127.0.0.0/8`, `::1`), which are plain HTTP as Docker allows them by default, until one
answers that it speaks HTTPS (a 400 saying so, as Go's and nginx's servers do; or it ends
a plain request unanswered and completes a TLS handshake): from then on
HTTPS without a certificate check, as the engine speaks to it (loopback registries are
insecure for the engine, whatever its settings); a registry's
own CA or client certificate is read where Docker reads it,
`/etc/docker/certs.d/<host[:port]>/` (`*.crt`, `*.cert` + `*.key`). The engine's insecure
registries (`engine_registries.EngineRegistries`, given by the downloader: `trust`) get
HTTPS without a certificate check, and plain HTTP from the moment one answers in plain
HTTP, as the engine's pulls do; its mirrors named `http://` get plain HTTP. A certificate
refused, or a plain HTTP answer from a registry that is not insecure, is a `RegistryError`
naming it (not a lost link: trying again cannot help).

Auth as the distribution spec describes it: a 401 with `WWW-Authenticate: Bearer realm=..,
service=.., scope=..` → a token from the realm (with the configured login as Basic auth if
there is one, anonymous otherwise), cached per registry and repository; `Basic` → the
configured login. Redirects (a blob served from a CDN) are followed without the
Authorization header when they leave the registry's host. Credentials are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ipaddress
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import h11

from cua.download.engine_registries import (
    DOCKER_HUB,
    NONE,
    EngineRegistries,
    Resolver,
    resolve,
)
from cua.download.link import Link, SocketConnector, open_link
from cua.download.manifests import ACCEPT
from cua.download.proxy import Proxies, ProxyError, tunnel

log = logging.getLogger(__name__)

IDLE_KEEP = 30.0  # seconds an idle connection is kept for the next request to its host
IDLE_PER_HOST = 8  # idle connections kept per host at most
DISCARD_LIMIT = 65536  # bytes of an unused body read to keep its connection
DOCKER_CERTS_DIR = "/etc/docker/certs.d"
MAX_REDIRECTS = 5
# OpenSSL's reasons when the peer's first bytes are not TLS (an HTTP answer: "HTTP/1.1 400")
NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)


class RegistryError(Exception):
    """The registry refused or failed a request; the text says which and why."""


class LinkError(RegistryError):
    """The connection failed or broke (lost link, registry restart): worth retrying."""


@dataclass(frozen=True, slots=True)
class Login:
    username: str
    password: str = field(repr=False)


def is_loopback(host: str) -> bool:
    """Whether `host[:port]` is this machine (`localhost`, 127.0.0.0/8, `[::1]`)."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def api_host(registry: str) -> str:
    """The host serving `registry`'s API (Docker Hub's is not `docker.io`)."""
    return "registry-1.docker.io" if registry in DOCKER_HUB else registry


def base_url(registry: str) -> str:
    """`http://` for loopback registries, `https://` for every other one."""
    host = api_host(registry)
    return f"{'http' if is_loopback(host) else 'https'}://{host}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


def _basic(login: Login) -> str:
    token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
    return f"Basic {token}"


class _StaleLink(LinkError):
    """A kept connection failed before any answer: the registry closed it while idle."""


class _Unanswered(LinkError):
    """A new connection ended before any answer (a TLS server given plain HTTP may)."""


class Answer:
    """A response whose body is read as it comes; `close()` ends it: the connection goes
    back to the client for the next request when the body was read to its end (and the
    registry keeps it open), else it is closed.

    A body of known length (`Content-Length`, no chunked encoding: what registries send for
    blobs) is read straight from the link, past h11: a blob's bytes are not copied into
    h11's buffer and out again."""

    def __init__(
        self,
        head: h11.Response,
        connection: h11.Connection,
        link: Link,
        timeout: float,
        keep: Callable[[Link], None] | None = None,
    ) -> None:
        self.status: int = head.status_code
        self._timeout = timeout
        self.headers = {k.decode().lower(): v.decode() for k, v in head.headers}
        self._h11 = connection
        self._link = link
        self._keep = keep
        if head.http_version != b"1.1" or "close" in self.headers.get("connection", "").lower():
            self._keep = None
        self._ended = False  # the whole body was read, nothing after it
        self._closed = False
        self._length: int | None = None
        length = self.headers.get("content-length", "")
        if "transfer-encoding" not in self.headers and length.isdigit():
            self._length = int(length)

    async def chunks(self) -> AsyncIterator[memoryview]:
        """The body as it comes, each chunk valid until the next is asked for (a view of the
        link's buffer); a silence longer than the timeout is a lost link (a link that drops
        without a reset never says so otherwise)."""
        if self._length is not None:
            async for chunk in self._counted(self._length):
                yield chunk
            return
        while True:
            event = await _next_event(self._h11, self._link, self._timeout)
            if isinstance(event, h11.Data):
                yield memoryview(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._ended = not self._h11.trailing_data[0]
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise LinkError("the registry closed the connection in the middle of a body")

    async def _counted(self, left: int) -> AsyncIterator[memoryview]:
        """`left` bytes of body: those h11 read past the head, then the link's."""
        buffered = self._h11.trailing_data[0]
        ahead = buffered[:left]
        if ahead:
            left -= len(ahead)
            yield memoryview(ahead)
        past = len(buffered) > len(ahead)
        while left > 0:
            chunk = await _take(self._link, self._timeout)
            if not chunk:
                raise LinkError("the registry closed the connection in the middle of a body")
            if len(chunk) > left:
                past = True
                chunk = chunk[:left]
            left -= len(chunk)
            yield chunk
        if past:  # bytes past the body: the connection is not reused
            self._keep = None
        self._ended = True

    async def read(self, limit: int = 16 << 20) -> bytes:
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise RegistryError(f"answer larger than {limit} bytes")
        return bytes(data)

    async def discard(self) -> None:
        """Read a small body of known length (an auth challenge's, a redirect's) so that
        its connection is kept for the request that follows; any other closes it."""
        if self._length is not None and self._length <= DISCARD_LIMIT:
            with contextlib.suppress(RegistryError):
                await self.read(DISCARD_LIMIT)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ended and self._keep is not None and self._link.usable():
            self._keep(self._link)
        else:
            self._link.close()


async def _take(link: Link, silence: float) -> memoryview:
    """What the link received next; `silence`: seconds without data that make a lost link."""
    try:
        async with asyncio.timeout(silence):
            return await link.take()
    except TimeoutError:
        raise LinkError(f"no data for {silence:g} s") from None
    except OSError as error:
        raise LinkError(str(error) or type(error).__name__) from None


async def _next_event(connection: h11.Connection, link: Link, silence: float) -> object:
    try:
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            connection.receive_data(bytes(await _take(link, silence)))
    except h11.ProtocolError as error:
        raise LinkError(f"not an HTTP answer: {error}") from None


class RegistryClient:
    """Requests to registries. `logins`: registry host -> Login. `connect`: how the TCP
    connection to (host, port) is made (None: the event loop's, with name resolution; tests
    and the bench reach their registry through their own, and resolve no names: `resolver`).
    `certs_dir`: per-registry CAs and client certificates, Docker's layout
    (`/etc/docker/certs.d/<host[:port]>/`). `proxies`: the HTTP proxy to go through (the
    agent's environment's; None: the engine's). The engine's insecure registries, mirrors
    and proxy: `trust`."""

    def __init__(
        self,
        logins: Mapping[str, Login] | None = None,
        *,
        connect: SocketConnector | None = None,
        timeout: float = 60.0,
        certs_dir: str | Path = DOCKER_CERTS_DIR,
        resolver: Resolver | None = None,
        proxies: Proxies | None = None,
    ) -> None:
        self._logins = dict(logins or {})
        self._connect = connect
        self._proxies = proxies
        self._resolver = resolver if resolver is not None or connect is not None else resolve
        self.timeout = timeout
        self._tokens: dict[tuple[str, str], str] = {}
        self.certs_dir = Path(certs_dir)
        self._tls: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._idle: dict[tuple[str, str], list[Link]] = {}  # (scheme, host[:port]) -> links
        self._engine = NONE  # the engine's registry settings
        self._insecure_hosts: dict[str, bool] = {}  # host[:port] -> insecure, as decided
        self._plain: set[str] = set()  # hosts spoken to in plain HTTP (not loopback ones)
        self._tls_loopback: set[str] = set()  # loopback hosts that answered in HTTPS terms

    def _context(self, netloc: str, *, verify: bool) -> ssl.SSLContext:
        """The system's CAs, plus what `<certs_dir>/<host[:port]>/` holds as Docker reads
        it: `*.crt` extra CAs, `*.cert` + `*.key` a client certificate; no check of the
        registry's certificate unless `verify`."""
        key = (netloc, verify)
        if key not in self._tls:
            context = ssl.create_default_context()
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            folder = self.certs_dir / netloc
            if folder.is_dir():
                for ca in sorted(folder.glob("*.crt")):
                    context.load_verify_locations(cafile=str(ca))
                for cert in sorted(folder.glob("*.cert")):
                    context.load_cert_chain(str(cert), str(cert.with_suffix(".key")))
            self._tls[key] = context
        return self._tls[key]

    async def _is_insecure(self, netloc: str) -> bool:
        if netloc not in self._insecure_hosts:
            self._insecure_hosts[netloc] = is_loopback(netloc) or await self._engine.is_insecure(
                netloc, self._resolver
            )
        return self._insecure_hosts[netloc]

    def trust(self, registries: EngineRegistries) -> None:
        """Follow the engine's registry settings from now on."""
        if registries != self._engine:
            if self._proxies is None and registries.proxies != self._engine.proxies:
                log.info(
                    "registry connections: %s (the engine's settings)",
                    registries.proxies.describe(),
                )
            self._engine = registries
            self._insecure_hosts.clear()
            self._plain = set(registries.plain_hosts)

    async def _send(self, method: str, url: str, headers: Mapping[str, str]) -> Answer:
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.netloc in self._plain:
            parts = parts._replace(scheme="http")
            url = parts.geturl()
        elif parts.scheme == "http" and parts.netloc in self._tls_loopback:
            parts = parts._replace(scheme="https")
            url = parts.geturl()
        https = parts.scheme == "https"
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        fields = [("Host", parts.netloc), ("User-Agent", "cua"), *headers.items()]
        request = h11.Request(method=method, target=target, headers=fields)
        host = (parts.scheme, parts.netloc)
        kept = self._take_idle(host)
        if kept is not None:
            try:
                return await self._exchange(kept, request, host)
            except _StaleLink:
                pass  # closed by the registry while idle: a new connection
        insecure = https and await self._is_insecure(parts.netloc)
        hostname = parts.hostname or ""
        proxies = self._proxies if self._proxies is not None else self._engine.proxies
        proxy = None if is_loopback(parts.netloc) else proxies.for_url(parts.scheme, hostname)
        connect = tunnel(proxy, self._connect) if proxy is not None else self._connect
        try:
            async with asyncio.timeout(self.timeout):
                tls = self._context(parts.netloc, verify=not insecure) if https else None
                port = parts.port or (443 if https else 80)
                link = await open_link(hostname, port, tls, connect)
        except TimeoutError:
            raise LinkError(f"{parts.netloc}: no connection within {self.timeout:g} s") from None
        except ProxyError as error:
            if error.status in (401, 403, 407):  # the proxy's refusal: it will not change
                raise RegistryError(f"{parts.netloc}: {error}") from None
            raise LinkError(f"{parts.netloc}: {error}") from None
        except ssl.SSLCertVerificationError as error:
            raise RegistryError(
                f"{parts.netloc}: its certificate is not trusted ({error.verify_message}); "
                f"trusted are the system's CAs and those in {self.certs_dir / parts.netloc}/"
            ) from None
        except ssl.SSLError as error:
            if error.reason not in NOT_TLS_REASONS:
                raise LinkError(f"{parts.netloc}: {error}") from None
            if not insecure:
                raise RegistryError(
                    f"{parts.netloc} answers in plain HTTP, not HTTPS: only the engine's "
                    "insecure registries (its insecure-registries) and loopback ones are "
                    "spoken to in plain HTTP"
                ) from None
            self._plain.add(parts.netloc)  # as the engine's pulls fall back to HTTP
            return await self._send(method, url, headers)
        except OSError as error:
            raise LinkError(f"{parts.netloc}: {error}") from None
        return await self._exchange(link, request, host, fresh=True)

    async def _exchange(
        self, link: Link, request: h11.Request, host: tuple[str, str], *, fresh: bool = False
    ) -> Answer:
        """`request` on `link`, to the answer's head. On a kept link, a failure before any
        answer is `_StaleLink` (worth one new connection)."""
        netloc = host[1]
        connection = h11.Connection(our_role=h11.CLIENT)
        try:
            link.write(
                b"".join(
                    filter(None, (connection.send(request), connection.send(h11.EndOfMessage())))
                )
            )
            async with asyncio.timeout(self.timeout):
                while True:
                    event = await _next_event(connection, link, self.timeout)
                    if isinstance(event, h11.Response):
                        keep = functools.partial(self._keep_idle, host)
                        return Answer(event, connection, link, self.timeout, keep)
                    if isinstance(event, h11.ConnectionClosed):
                        raise LinkError(f"{netloc} closed the connection")
        except TimeoutError:
            link.close()
            raise LinkError(f"{netloc}: no answer within {self.timeout:g} s") from None
        except (OSError, LinkError) as error:
            link.close()
            if not fresh:
                raise _StaleLink(f"{netloc}: {error}") from None
            message = str(error) or type(error).__name__
            if not message.startswith(netloc):
                message = f"{netloc}: {message}"
            raise _Unanswered(message) from None
        except BaseException:
            link.close()
            raise

    def _take_idle(self, host: tuple[str, str]) -> Link | None:
        """The most recently kept connection to `host` still open and young enough."""
        links = self._idle.get(host, [])
        while links:
            link = links.pop()
            if link.usable() and time.monotonic() - link.idle_since <= IDLE_KEEP:
                return link
            link.close()
        return None

    def _keep_idle(self, host: tuple[str, str], link: Link) -> None:
        links = self._idle.setdefault(host, [])
        if len(links) >= IDLE_PER_HOST:
            link.close()
            return
        link.idle_since = time.monotonic()
        link.idle()
        links.append(link)

    async def close(self) -> None:
        """Close the idle connections."""
        for links in self._idle.values():
            for link in links:
                link.close()
        self._idle.clear()

    async def _token(self, registry: str, params: Mapping[str, str], scope: str) -> str:
        realm = params.get("realm", "")
        if not realm:
            raise RegistryError(f"{registry} asks for a token but names no realm")
        query = {k: v for k, v in (("service", params.get("service", "")), ("scope", scope)) if v}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        login = self._logins.get(registry)
        headers = {"Authorization": _basic(login)} if login else {}
        answer = await self._send("GET", url, headers)
        try:
            body = await answer.read()
        finally:
            answer.close()
        if answer.status != 200:
            raise RegistryError(f"{registry}: token refused ({answer.status})")
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{registry}: the token answer holds no token")
        return f"Bearer {token}"

    async def get(
        self,
        registry: str,
        repository: str,
        path: str,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """GET `/v2/<repository>/<path>` with auth and redirects; an answer < 400 (or 416,
        which a resumed blob can get) is returned open, any other is RegistryError."""
        key = (registry, repository)
        url = f"{base_url(registry)}/v2/{repository}/{path}"
        extra = dict(headers or {})
        authorized = False
        for _ in range(MAX_REDIRECTS + 2):
            sending = dict(extra)
            same_host = urlsplit(url).netloc == api_host(registry)
            if same_host and key in self._tokens:
                sending["Authorization"] = self._tokens[key]
            try:
                answer = await self._send("GET", url, sending)
            except _Unanswered:
                if not await self._answers_tls(url):
                    raise
                url = urlsplit(url)._replace(scheme="https").geturl()
                continue  # the same request, in HTTPS
            if answer.status == 401 and same_host and not authorized:
                await answer.discard()
                scheme, params = parse_challenge(answer.headers.get("www-authenticate", ""))
                if scheme == "bearer":
                    scope = params.get("scope") or f"repository:{repository}:pull"
                    self._tokens[key] = await self._token(registry, params, scope)
                elif scheme == "basic" and registry in self._logins:
                    self._tokens[key] = _basic(self._logins[registry])
                else:
                    raise RegistryError(f"{registry}: authentication required and no login")
                authorized = True
                continue
            if answer.status in (301, 302, 303, 307, 308) and "location" in answer.headers:
                await answer.discard()
                url = urljoin(url, answer.headers["location"])
                continue
            if answer.status >= 400 and answer.status != 416:
                try:
                    detail = (await answer.read(65536)).decode(errors="replace").strip()
                except RegistryError:
                    detail = ""
                finally:
                    answer.close()
                if self._speaks_tls(url, answer.status, detail):
                    url = urlsplit(url)._replace(scheme="https").geturl()
                    continue  # the same request, in HTTPS
                what = f"{registry}/{repository}/{path.split('/', maxsplit=1)[0]}"
                raise RegistryError(f"{what}: {answer.status} {_error_text(detail)}".strip())
            return answer
        raise RegistryError(f"{registry}: too many redirects")

    def _speaks_tls(self, url: str, status: int, detail: str) -> bool:
        """Whether a loopback registry spoken to in plain HTTP answered that it speaks HTTPS
        ("Client sent an HTTP request to an HTTPS server.", "The plain HTTP request was sent
        to HTTPS port"): it is spoken to in HTTPS from now on."""
        netloc = _plain_loopback(url)
        if status != 400 or not netloc:
            return False
        if netloc not in self._tls_loopback:  # else learnt meanwhile, by a request at once
            if "https" not in detail.lower():
                return False
            self._to_tls(netloc)
        return True

    async def _answers_tls(self, url: str) -> bool:
        """Whether a loopback registry that ended a plain HTTP request unanswered speaks
        HTTPS (a TLS server that closes the connection instead of answering 400): a TLS
        handshake with it (no certificate check, as for any loopback registry) tells; it is
        spoken to in HTTPS from now on."""
        netloc = _plain_loopback(url)
        if not netloc:
            return False
        if netloc not in self._tls_loopback:  # else learnt meanwhile, by a request at once
            parts = urlsplit(url)
            tls = self._context(netloc, verify=False)
            try:
                async with asyncio.timeout(self.timeout):
                    link = await open_link(
                        parts.hostname or "", parts.port or 80, tls, self._connect
                    )
            except (OSError, TimeoutError):  # ssl.SSLError is an OSError
                return False
            link.close()
            self._to_tls(netloc, " (it ended a plain HTTP request unanswered)")
        return True

    def _to_tls(self, netloc: str, how: str = "") -> None:
        """A loopback registry found to speak HTTPS: spoken to in HTTPS from now on (`_send`
        turns its http:// URLs into https:// ones)."""
        log.info("registry %s speaks HTTPS%s: spoken to in HTTPS from now on", netloc, how)
        self._tls_loopback.add(netloc)

    async def manifest(self, registry: str, repository: str, reference: str) -> tuple[bytes, str]:
        """The manifest's bytes and Content-Type."""
        answer = await self.get(registry, repository, f"manifests/{reference}", {"Accept": ACCEPT})
        try:
            return await answer.read(), answer.headers.get("content-type", "")
        finally:
            answer.close()


def _plain_loopback(url: str) -> str:
    """The `host[:port]` of `url` when it is a loopback registry's in plain HTTP, else ""."""
    parts = urlsplit(url)
    return parts.netloc if parts.scheme == "http" and is_loopback(parts.netloc) else ""


def _error_text(body: str) -> str:
    """The registry's error message (`{"errors": [{"message": ...}]}`), else the body."""
    try:
        errors = json.loads(body)["errors"]
        return "; ".join(str(e.get("message", e.get("code", ""))) for e in errors)
    except (ValueError, KeyError, TypeError, AttributeError):
        return body[:200]
