"""The registry client against an in-process fake registry on loopback: the token flow
with the configured login, Basic auth, redirects, errors, and a silent link."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import ipaddress
import json
import logging
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cua.download.engine_registries import EngineRegistries, Mirror
from cua.download.link import BUFFER_SIZE, Link, SocketConnector
from cua.download.registry import LinkError, Login, RegistryClient, RegistryError
from cua_dev.tlsgen import generate_tls

pytestmark = pytest.mark.unit

TOKEN = "t0k3n"


class FakeRegistry:
    def __init__(self, scheme: str = "bearer") -> None:
        self.scheme = scheme
        self.port = 0
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        target = head[0].split(" ")[1]
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in head[1:] if line)}
        self.seen.append((target, headers))
        status, extra, body = self.answer(target, headers)
        if status == 0:  # silence
            await asyncio.sleep(1)
            return
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra, "", ""]
        writer.write("\r\n".join(lines).encode() + body)
        await writer.drain()
        writer.close()

    def answer(self, target: str, headers: dict[str, str]) -> tuple[int, list[str], bytes]:
        auth = headers.get("authorization", "")
        basic = "Basic " + base64.b64encode(b"me:secret").decode()
        if target.startswith("/token"):
            if auth != basic or "scope=repository%3Ar%3Apull" not in target:
                return 401, [], b""
            return 200, [], json.dumps({"token": TOKEN}).encode()
        if target == "/v2/r/blobs/stall":
            return 0, [], b""
        wanted = f"Bearer {TOKEN}" if self.scheme == "bearer" else basic
        if auth != wanted:
            realm = f'Bearer realm="http://127.0.0.1:{self.port}/token",service="fake"'
            challenge = realm if self.scheme == "bearer" else 'Basic realm="fake"'
            return 401, [f"WWW-Authenticate: {challenge}"], b""
        if target == "/v2/r/blobs/moved":
            return 307, [f"Location: http://127.0.0.1:{self.port}/elsewhere/blob"], b""
        if target == "/v2/r/manifests/1":
            return 200, ["Content-Type: application/json"], b'{"ok": 1}'
        return 404, [], b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown tag"}]}'


async def _serve(fake: FakeRegistry) -> AsyncIterator[str]:
    server = await asyncio.start_server(fake._handle, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{fake.port}"
    finally:
        server.close()


@pytest.fixture
async def bearer() -> AsyncIterator[tuple[FakeRegistry, str]]:
    fake = FakeRegistry("bearer")
    async for address in _serve(fake):
        yield fake, address


@pytest.fixture
async def basic() -> AsyncIterator[tuple[FakeRegistry, str]]:
    fake = FakeRegistry("basic")
    async for address in _serve(fake):
        yield fake, address


async def test_a_token_is_fetched_with_the_login_and_reused(
    bearer: tuple[FakeRegistry, str],
) -> None:
    fake, address = bearer
    client = RegistryClient({address: Login("me", "secret")})
    assert await client.manifest(address, "r", "1") == (b'{"ok": 1}', "application/json")
    assert await client.manifest(address, "r", "1") == (b'{"ok": 1}', "application/json")
    targets = [target for target, _ in fake.seen]
    assert targets == ["/v2/r/manifests/1", targets[1], "/v2/r/manifests/1", "/v2/r/manifests/1"]
    assert targets[1].startswith("/token?service=fake&scope=repository%3Ar%3Apull")


async def test_basic_auth_and_a_redirect_without_the_credentials(
    basic: tuple[FakeRegistry, str],
) -> None:
    fake, address = basic
    client = RegistryClient({address: Login("me", "secret")})
    assert await client.manifest(address, "r", "1") == (b'{"ok": 1}', "application/json")
    with pytest.raises(RegistryError, match=r"404"):
        await client.get(address, "r", "blobs/moved")
    assert fake.seen[-1][0] == "/elsewhere/blob"


async def test_no_login_and_registry_errors_are_named(bearer: tuple[FakeRegistry, str]) -> None:
    _fake, address = bearer
    with pytest.raises(RegistryError, match="token refused"):
        await RegistryClient().manifest(address, "r", "1")
    client = RegistryClient({address: Login("me", "secret")})
    with pytest.raises(RegistryError, match=r"r/manifests: 404 unknown tag"):
        await client.manifest(address, "r", "2")


async def test_a_silent_link_is_a_link_error(bearer: tuple[FakeRegistry, str]) -> None:
    _fake, address = bearer
    with pytest.raises(LinkError, match=r"no answer within 0\.3 s"):
        await RegistryClient(timeout=0.3).get(address, "r", "blobs/stall")


async def test_a_refused_connection_is_a_link_error() -> None:
    with pytest.raises(LinkError):
        await RegistryClient().get("127.0.0.1:1", "r", "manifests/1")


def _as(address: tuple[str, int], server: asyncio.Server) -> SocketConnector:
    """Connections to `address` (the only one asked for) made to the loopback `server`."""
    port = server.sockets[0].getsockname()[1]

    async def connect(host: str, host_port: int) -> socket.socket:
        assert (host, host_port) == address
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        return sock

    return connect


async def test_https_with_the_registrys_ca_and_client_certificate_from_certs_d(
    tmp_path: Path,
) -> None:
    pki = generate_tls(tmp_path / "pki")
    certs = tmp_path / "certs.d" / "reg.test"
    certs.mkdir(parents=True)
    shutil.copy(pki.ca_cert, certs / "ca.crt")
    shutil.copy(pki.client_cert, certs / "client.cert")
    shutil.copy(pki.client_key, certs / "client.key")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    server_tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server_tls.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no answer
    fake = FakeRegistry("basic")
    server = await asyncio.start_server(fake._handle, "127.0.0.1", 0, ssl=server_tls)
    to_fake = _as(("reg.test", 443), server)
    client = RegistryClient(
        {"reg.test": Login("me", "secret")}, connect=to_fake, certs_dir=tmp_path / "certs.d"
    )
    try:
        assert await client.manifest("reg.test", "r", "1") == (b'{"ok": 1}', "application/json")
        no_ca = tmp_path / "no-ca" / "reg.test"  # the client certificate only
        no_ca.mkdir(parents=True)
        shutil.copy(pki.client_cert, no_ca / "client.cert")
        shutil.copy(pki.client_key, no_ca / "client.key")
        untrusting = RegistryClient(
            {"reg.test": Login("me", "secret")}, connect=to_fake, certs_dir=no_ca.parent
        )
        with pytest.raises(RegistryError, match=r"reg\.test: its certificate is not trusted") as e:
            await untrusting.manifest("reg.test", "r", "1")
        assert not isinstance(e.value, LinkError)  # not retried: it cannot get better
        assert f"{no_ca}/" in str(e.value)
        # an insecure registry of the engine's: its certificate is not checked
        untrusting.trust(EngineRegistries({"reg.test": False}))
        assert await untrusting.manifest("reg.test", "r", "1") == (
            b'{"ok": 1}',
            "application/json",
        )
        await untrusting.close()
    finally:
        server.close()


class PlainRegistry:
    """A registry in plain HTTP that answers a TLS hello as Go's HTTP servers do (400)."""

    def __init__(self) -> None:
        self.connections = 0
        self.tls_hellos = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = await reader.readexactly(1)
        if first == b"\x16":
            self.tls_hellos += 1
            writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        else:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"n": 1}')
        await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def _plain_registry() -> AsyncIterator[tuple[PlainRegistry, RegistryClient]]:
    """A `PlainRegistry` reached as `reg.test:5000` (not loopback: HTTPS by default)."""
    fake = PlainRegistry()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    client = RegistryClient(connect=_as(("reg.test", 5000), server))
    try:
        yield fake, client
    finally:
        await client.close()
        server.close()


async def test_a_plain_http_answer_is_refused_at_once_unless_the_engine_lists_it_insecure() -> None:
    async with _plain_registry() as (fake, client):
        with pytest.raises(RegistryError, match=r"reg\.test:5000 answers in plain HTTP") as e:
            await client.manifest("reg.test:5000", "r", "1")
        assert not isinstance(e.value, LinkError)  # no retries for it
        assert "insecure-registries" in str(e.value)
        assert (fake.connections, fake.tls_hellos) == (1, 1)

        client.trust(EngineRegistries({"reg.test:5000": False, "docker.io": True}))
        assert (await client.manifest("reg.test:5000", "r", "1"))[0] == b'{"n": 1}'
        assert (fake.connections, fake.tls_hellos) == (3, 2)  # HTTPS tried, then HTTP
        assert (await client.manifest("reg.test:5000", "r", "1"))[0] == b'{"n": 1}'
        assert (fake.connections, fake.tls_hellos) == (4, 2)  # plain HTTP from then on


async def test_a_mirror_the_engine_names_with_http_gets_plain_http_at_once() -> None:
    async with _plain_registry() as (fake, client):
        client.trust(EngineRegistries({}, mirrors=(Mirror("reg.test:5000", plain=True),)))
        assert (await client.manifest("reg.test:5000", "r", "1"))[0] == b'{"n": 1}'
        assert (fake.connections, fake.tls_hellos) == (1, 0)


async def test_a_loopback_registry_that_says_it_speaks_https_gets_tls_unchecked(
    tmp_path: Path,
) -> None:
    """A loopback registry is asked in plain HTTP; once its 400 says it speaks HTTPS (Go's
    words), it gets TLS without a certificate check, as the engine gives it, for good. A
    loopback registry's 400 that says nothing of HTTPS is its error."""
    pki = generate_tls(tmp_path / "pki")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))  # CA not trusted
    fake = FakeRegistry("basic")
    tls_server = await asyncio.start_server(fake._handle, "127.0.0.1", 0, ssl=server_tls)
    refusals: list[bytes] = []
    answer = b"Client sent an HTTP request to an HTTPS server.\n"

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        refusals.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n" + answer)
        await writer.drain()
        writer.close()

    plain_server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    to_plain = _as(("127.0.0.1", 5000), plain_server)
    to_tls = _as(("127.0.0.1", 5000), tls_server)

    async def first_plain_then_tls(host: str, port: int) -> socket.socket:
        return await (to_tls if refusals else to_plain)(host, port)

    login = {"127.0.0.1:5000": Login("me", "secret")}
    client = RegistryClient(login, connect=first_plain_then_tls)
    manifest = (b'{"ok": 1}', "application/json")
    try:
        # two requests at once: both asked in plain HTTP, both then in HTTPS
        both = (
            client.manifest("127.0.0.1:5000", "r", "1"),
            client.manifest("127.0.0.1:5000", "r", "1"),
        )
        assert await asyncio.gather(*both) == [manifest, manifest]
        assert len(refusals) in (1, 2)
        refused = len(refusals)
        assert await client.manifest("127.0.0.1:5000", "r", "1") == manifest
        assert len(refusals) == refused  # HTTPS from the first answer on
        assert [target for target, _ in fake.seen].count("/v2/r/manifests/1") >= 3
        await client.close()
        answer = b"bad request\n"
        other = RegistryClient(login, connect=to_plain)
        with pytest.raises(RegistryError, match=r"r/manifests: 400 bad request"):
            await other.manifest("127.0.0.1:5000", "r", "1")
        assert len(refusals) == refused + 1
    finally:
        tls_server.close()
        plain_server.close()


async def test_a_loopback_registry_that_ends_plain_http_unanswered_is_tried_in_tls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS server that closes a plain HTTP request without the 400 (Python's, here): a
    TLS handshake says it speaks HTTPS, and it is spoken to so (unchecked) from then on. A
    plain server that closes unanswered stays a lost link (its handshake fails)."""
    caplog.set_level(logging.INFO)
    pki = generate_tls(tmp_path / "pki")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))  # CA not trusted
    fake = FakeRegistry("basic")  # it answers once per connection
    tls_server = await asyncio.start_server(fake._handle, "127.0.0.1", 0, ssl=server_tls)
    connections: list[str] = []

    async def counted(host: str, port: int) -> socket.socket:
        connections.append(f"{host}:{port}")
        return await _as(("127.0.0.1", 5000), tls_server)(host, port)

    client = RegistryClient({"127.0.0.1:5000": Login("me", "secret")}, connect=counted)
    manifest = (b'{"ok": 1}', "application/json")
    closing: asyncio.Server | None = None
    try:
        assert await client.manifest("127.0.0.1:5000", "r", "1") == manifest
        # plain (ended), the handshake, then in TLS: the challenge and the request
        assert len(connections) == 4
        assert await client.manifest("127.0.0.1:5000", "r", "1") == manifest
        assert len(connections) == 5  # in TLS at once
        assert [target for target, _ in fake.seen] == ["/v2/r/manifests/1"] * 3
        assert "registry 127.0.0.1:5000 speaks HTTPS (it ended a plain HTTP" in caplog.text
        await client.close()

        async def close_at_once(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        closing = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
        other = RegistryClient(connect=_as(("127.0.0.1", 5000), closing))
        with pytest.raises(LinkError, match=r"^127\.0\.0\.1:5000[: ]"):
            await other.manifest("127.0.0.1:5000", "r", "1")
        await other.close()
    finally:
        tls_server.close()
        if closing is not None:
            closing.close()


async def test_a_registry_in_the_engines_insecure_networks_gets_plain_http() -> None:
    async with _plain_registry() as (_fake, client):
        client.trust(EngineRegistries({}, (ipaddress.ip_network("10.0.0.0/8"),)))
        with pytest.raises(RegistryError, match="answers in plain HTTP"):
            await client.manifest("reg.test:5000", "r", "1")  # names are not resolved here
    resolved: list[str] = []

    async def resolver(name: str) -> list[str]:
        resolved.append(name)
        return ["10.1.2.3"]

    networks = EngineRegistries({}, (ipaddress.ip_network("10.0.0.0/8"),))
    assert await networks.is_insecure("reg.test:5000", resolver)
    assert await networks.is_insecure("10.9.9.9:5000", None)
    assert not await networks.is_insecure("192.168.1.1", None)
    assert resolved == ["reg.test"]
    assert not await EngineRegistries({"reg.test:5000": True}, networks.networks).is_insecure(
        "reg.test:5000", resolver
    )  # listed by name as secure: its address does not matter
    assert resolved == ["reg.test"]


def test_the_engines_engine_registries_from_its_info() -> None:
    info = {
        "RegistryConfig": {
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.0.0.0/8", "not a network"],
            "IndexConfigs": {
                "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True},
                "lan.example:5000": {"Name": "lan.example:5000", "Secure": False},
                "broken": "not an entry",
            },
            "Mirrors": ["https://mirror.example/", "http://10.0.0.5:5000", "ftp://x", "x"],
        }
    }
    found = EngineRegistries.from_engine_info(info)
    assert found.listed == {"docker.io": True, "lan.example:5000": False}
    assert [str(n) for n in found.networks] == ["127.0.0.0/8", "10.0.0.0/8"]
    assert found.mirrors == (Mirror("mirror.example", False), Mirror("10.0.0.5:5000", True))
    assert found.mirrors_of("docker.io") == ["mirror.example", "10.0.0.5:5000"]
    assert found.mirrors_of("ghcr.io") == []  # the engine mirrors Docker Hub only
    assert found.plain_hosts == {"10.0.0.5:5000"}
    assert EngineRegistries.from_engine_info({}) == EngineRegistries({})
    assert EngineRegistries.from_engine_info({"RegistryConfig": None}).networks == ()


async def _raw_server(send: dict[str, list[bytes]]) -> tuple[asyncio.Server, str]:
    """Answers each target with its pieces, written one by one, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        for piece in send[head.split(b" ")[1].decode()]:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_bodies_are_read_whole_counted_or_chunked_and_a_short_one_is_a_link_error() -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: more than one read
    counted = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:1000], body[1000:]))
    server, address = await _raw_server(
        {
            # the head and the body's first bytes in one piece: h11 reads them together
            "/v2/r/blobs/counted": [counted + body[:100], body[100:70000], body[70000:]],
            "/v2/r/blobs/chunked": [chunked, chunks, b"0\r\n\r\n"],
            "/v2/r/blobs/short": [counted + body[:5000]],
        }
    )
    client = RegistryClient()
    try:
        for path in ("blobs/counted", "blobs/chunked"):
            answer = await client.get(address, "r", path)
            try:
                # each chunk is a view of the link's buffer until the next: copied
                assert b"".join([bytes(chunk) async for chunk in answer.chunks()]) == body
            finally:
                answer.close()
        answer = await client.get(address, "r", "blobs/short")
        received = bytearray()

        async def read_short() -> None:
            async for chunk in answer.chunks():
                received.extend(chunk)

        with pytest.raises(LinkError, match="closed the connection in the middle of a body"):
            await read_short()
        answer.close()
        assert bytes(received) == body[:5000]
    finally:
        server.close()


class KeepAliveRegistry:
    """Answers requests one after the other on each connection, as registries do.
    `mode`: "keep" answers all; "challenge" answers 401 (Basic) to a request without
    credentials; "close-header" says `Connection: close` (and would still answer
    on that connection: the client must not use it again); "trailing" sends bytes past
    each body (the client must stop at the body's length and not use that connection again);
    "drop-second" closes a connection when its second request comes, unanswered (the
    registry's idle timeout striking as the request arrives)."""

    def __init__(self, mode: str = "keep") -> None:
        self.mode = mode
        self.connections = 0
        self.requests: list[tuple[int, str]] = []  # (connection number, target)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ")[1].decode()
                self.requests.append((number, target))
                if self.mode == "drop-second" and served == 1:
                    return
                body = b"x" * 70000 if target.endswith("big") else b'{"n": %d}' % number
                extra = "Connection: close\r\n" if self.mode == "close-header" else ""
                status = "200 OK"
                if self.mode == "challenge" and b"Authorization: Basic" not in head:
                    status, body = "401 Unauthorized", b'{"errors": []}'
                    extra = 'WWW-Authenticate: Basic realm="fake"\r\n'
                head_out = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
                if self.mode == "trailing":  # the head first: the body comes in a read of its own
                    writer.write(head_out.encode())
                    await writer.drain()
                    await asyncio.sleep(0.01)
                    writer.write(body + b"junk")
                else:
                    writer.write(head_out.encode() + body)
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def _keep_alive(
    mode: str, *, login: bool = False
) -> AsyncIterator[tuple[KeepAliveRegistry, str, RegistryClient]]:
    """A `KeepAliveRegistry` serving while inside, and a client of it (with a login for
    it if `login`) whose kept connections are closed at the end."""
    fake = KeepAliveRegistry(mode)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = RegistryClient({address: Login("me", "secret")} if login else {})
    try:
        yield fake, address, client
    finally:
        await client.close()
        server.close()


async def test_requests_to_one_registry_share_a_kept_connection() -> None:
    async with _keep_alive("keep") as (fake, address, client):
        for _ in range(3):
            assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 1}'
        answer = await client.get(address, "r", "blobs/big")
        assert sum([len(chunk) async for chunk in answer.chunks()]) == 70000
        answer.close()
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 1}'
        assert fake.connections == 1
        assert len(fake.requests) == 5


async def test_a_kept_connection_holds_no_read_buffer() -> None:
    """Each connection reads into a 1 MiB buffer: an idle agent keeps none of them."""
    before = {id(o) for o in gc.get_objects() if isinstance(o, Link)}  # other tests'
    async with _keep_alive("keep") as (fake, address, client):
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 1}'
        answer = await client.get(address, "r", "blobs/big")
        links = [o for o in gc.get_objects() if isinstance(o, Link) and id(o) not in before]
        assert [link.buffered for link in links] == [BUFFER_SIZE]  # reading: it has one
        assert sum([len(chunk) async for chunk in answer.chunks()]) == 70000
        answer.close()
        assert fake.connections == 1
        assert [link.buffered for link in links] == [0]  # kept, idle: given back


async def test_a_body_left_unread_closes_its_connection() -> None:
    async with _keep_alive("keep") as (fake, address, client):
        answer = await client.get(address, "r", "blobs/big")
        async for _ in answer.chunks():
            break  # a fetch given up in the middle
        answer.close()
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 2}'
        # not even tried on the first connection (the rest of the blob is still coming there)
        assert fake.requests == [(1, "/v2/r/blobs/big"), (2, "/v2/r/manifests/1")]


async def test_connection_close_and_a_connection_kept_too_long_are_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _keep_alive("close-header") as (fake, address, client):
        for expected in (b'{"n": 1}', b'{"n": 2}'):
            assert (await client.manifest(address, "r", "1"))[0] == expected
        assert fake.connections == 2
    monkeypatch.setattr("cua.download.registry.IDLE_KEEP", 0.0)
    async with _keep_alive("keep") as (fake, address, client):
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 1}'
        await asyncio.sleep(0.01)
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 2}'


async def test_bytes_past_a_body_are_not_part_of_it_and_its_connection_is_not_reused() -> None:
    async with _keep_alive("trailing") as (fake, address, client):
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 1}'
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 2}'
        answer = await client.get(address, "r", "blobs/big")
        assert sum([len(chunk) async for chunk in answer.chunks()]) == 70000
        answer.close()
        assert fake.connections == 3


async def test_a_kept_connection_the_registry_dropped_is_replaced_at_once() -> None:
    async with _keep_alive("drop-second") as (fake, address, client):
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 1}'
        # the second request goes on the kept connection, which the registry closes
        # unanswered: it is sent again on a new one
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 2}'
        assert fake.requests == [
            (1, "/v2/r/manifests/1"),
            (1, "/v2/r/manifests/1"),
            (2, "/v2/r/manifests/1"),
        ]


async def test_an_auth_challenge_and_the_request_again_share_a_connection() -> None:
    async with _keep_alive("challenge", login=True) as (fake, address, client):
        assert (await client.manifest(address, "r", "1"))[0] == b'{"n": 1}'
        assert fake.requests == [(1, "/v2/r/manifests/1"), (1, "/v2/r/manifests/1")]
