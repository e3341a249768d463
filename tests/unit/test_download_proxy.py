"""The agent's downloads through an HTTP proxy (`cua.download.proxy`): the environment's
variables, NO_PROXY, and the registry client's CONNECT tunnels through `cua_dev`'s proxy to
in-process registries (TLS end to end, the proxy's login, its refusals)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
from pathlib import Path

import pytest

from cua.cli import main
from cua.download.engine_registries import EngineRegistries
from cua.download.proxy import Proxies, Proxy
from cua.download.registry import LinkError, RegistryClient, RegistryError
from cua_dev.connect_proxy import ConnectProxy
from cua_dev.tlsgen import generate_tls

pytestmark = pytest.mark.unit


def test_the_environments_proxies_lower_case_winning() -> None:
    proxies = Proxies.from_environment(
        {
            "HTTPS_PROXY": "http://upper:3128",
            "https_proxy": "http://me:s%40cret@proxy.lan:3128",
            "HTTP_PROXY": "proxy.lan",  # no scheme: http, port 80
            "NO_PROXY": "lan.example, 10.0.0.0/8,,.corp",
            "PATH": "/bin",
        }
    )
    assert proxies.https == Proxy("proxy.lan", 3128, "Basic bWU6c0BjcmV0")  # me:s@cret
    assert "bWU6" not in repr(proxies.https)  # the login never shows
    assert proxies.http == Proxy("proxy.lan", 80)
    assert proxies.direct == ("lan.example", "10.0.0.0/8", ".corp")
    assert proxies.describe() == (
        "proxy proxy.lan:3128 for https:// registries, proxy proxy.lan:80 for http:// "
        "registries, not for lan.example, 10.0.0.0/8, .corp"
    )
    assert Proxies.from_environment({}) == Proxies()


@pytest.mark.parametrize(
    ("host", "direct"),
    [
        ("lan.example", True),
        ("reg.lan.example", True),  # a name covers its subdomains
        ("otherlan.example", False),
        ("a.corp", True),
        ("corp", True),
        ("10.9.8.7", True),  # in the CIDR
        ("11.0.0.1", False),
        ("ghcr.io", False),
    ],
)
def test_no_proxy_as_curl_and_go_read_it(host: str, direct: bool) -> None:
    proxies = Proxies(https=Proxy("p", 1), direct=("lan.example", "10.0.0.0/8", "*.corp", "x:5000"))
    assert (proxies.for_url("https", host) is None) == direct
    assert proxies.for_url("http", host) is None  # no HTTP_PROXY
    assert Proxies(https=Proxy("p", 1), direct=("*",)).for_url("https", "ghcr.io") is None


def test_a_malformed_proxy_variable_is_named_without_its_login() -> None:
    with pytest.raises(ValueError, match=r"HTTPS_PROXY: proxy 'socks5://p:1080'") as e:
        Proxies.from_environment({"HTTPS_PROXY": "socks5://me:secret@p:1080"})
    assert "secret" not in str(e.value)


def test_the_agent_refuses_to_start_with_a_malformed_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"update_agent": {"download": "agent"}}')
    monkeypatch.setenv("HTTPS_PROXY", "socks5://me:secret@p:1080")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    assert main(["state", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert 'update_agent.download "agent": HTTPS_PROXY: proxy' in error
    assert "secret" not in error


@pytest.fixture
def pki(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A TLS registry's server context, and a certs.d trusting its CA for `reg.test`."""
    files = generate_tls(tmp_path / "pki")
    certs = tmp_path / "certs.d" / "reg.test"
    certs.mkdir(parents=True)
    shutil.copy(files.ca_cert, certs / "ca.crt")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(files.server_cert), str(files.server_key))
    return server, certs.parent


async def _registry(server_tls: ssl.SSLContext) -> tuple[asyncio.Server, int, list[str]]:
    """A TLS registry answering every GET with a small manifest; the targets it saw."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b" ")[1].decode())
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"n": 1}')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
    return server, server.sockets[0].getsockname()[1], seen


async def test_requests_go_through_the_proxys_tunnel_with_its_login(
    pki: tuple[ssl.SSLContext, Path],
) -> None:
    server_tls, certs_dir = pki
    server, port, seen = await _registry(server_tls)
    routed: list[tuple[str, int]] = []

    async def route(host: str, target_port: int) -> socket.socket:
        routed.append((host, target_port))
        return socket.create_connection(("127.0.0.1", port))

    async def no_direct_connection(host: str, target_port: int) -> socket.socket:
        assert host == "127.0.0.1", f"{host}:{target_port} reached without the proxy"
        sock = socket.create_connection((host, target_port))
        sock.setblocking(False)
        return sock

    try:
        async with ConnectProxy(route, login="me:s3cret") as proxy:
            address = proxy.url.removeprefix("http://")
            good = Proxies.from_environment({"HTTPS_PROXY": f"http://me:s3cret@{address}"})
            client = RegistryClient(connect=no_direct_connection, certs_dir=certs_dir, proxies=good)
            assert (await client.manifest("reg.test", "r", "1"))[0] == b'{"n": 1}'
            assert (await client.manifest("reg.test", "r", "2"))[0] == b'{"n": 1}'
            await client.close()
            assert seen == ["/v2/r/manifests/1", "/v2/r/manifests/2"]  # TLS end to end
            assert routed == [("reg.test", 443), ("reg.test", 443)]
            assert proxy.tunnels[0] == ("reg.test:443", "Basic bWU6czNjcmV0")

            bad = Proxies.from_environment({"HTTPS_PROXY": f"http://me:wrong@{address}"})
            client = RegistryClient(connect=no_direct_connection, certs_dir=certs_dir, proxies=bad)
            with pytest.raises(RegistryError, match="407 Proxy Authentication Required") as e:
                await client.manifest("reg.test", "r", "1")
            assert not isinstance(e.value, LinkError)  # not retried
            assert "wrong" not in str(e.value)
            await client.close()
    finally:
        server.close()


async def test_an_unreachable_registry_behind_the_proxy_is_a_lost_link() -> None:
    async def route(host: str, port: int) -> socket.socket:
        raise ConnectionRefusedError(f"{host}:{port}")

    async with ConnectProxy(route) as proxy:
        client = RegistryClient(proxies=Proxies.from_environment({"HTTPS_PROXY": proxy.url}))
        with pytest.raises(LinkError, match="502 Bad Gateway"):  # retried, as a lost link is
            await client.manifest("reg.test", "r", "1")


async def test_loopback_registries_are_reached_directly() -> None:
    async def route(host: str, port: int) -> socket.socket:
        raise AssertionError(f"{host}:{port} went through the proxy")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"n": 1}')
        writer.close()

    plain = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = plain.sockets[0].getsockname()[1]
    try:
        async with ConnectProxy(route) as proxy:
            environment = {"HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url}
            client = RegistryClient(proxies=Proxies.from_environment(environment))
            # loopback: plain HTTP, never through the proxy
            assert (await client.manifest(f"127.0.0.1:{port}", "r", "1"))[0] == b'{"n": 1}'
            await client.close()
            assert proxy.tunnels == []
    finally:
        plain.close()


def test_the_engines_proxy_from_its_info_its_hidden_login_known_as_hidden() -> None:
    info = {
        "HttpsProxy": "http://xxxxx:xxxxx@proxy.lan:3128",  # as dockerd masks a login
        "HttpProxy": "http://me:s3cret@proxy.lan:3129",  # a login it would show: sent
        "NoProxy": "*.lan,10.0.0.0/8",
    }
    proxies = Proxies.from_engine_info(info)
    assert proxies.https == Proxy("proxy.lan", 3128, "", login_hidden=True)
    assert proxies.http == Proxy("proxy.lan", 3129, "Basic bWU6czNjcmV0")
    assert proxies.direct == ("*.lan", "10.0.0.0/8")
    assert Proxies.from_engine_info({"HttpsProxy": "", "NoProxy": None}) == Proxies()
    registries = EngineRegistries.from_engine_info(info | {"RegistryConfig": None})
    assert registries.proxies == proxies


def test_a_malformed_engine_proxy_is_logged_and_not_followed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registries = EngineRegistries.from_engine_info({"HttpsProxy": "socks5://p:1080"})
    assert registries.proxies == Proxies()
    assert "the engine's proxy setting is not understood (HTTPS_PROXY: proxy" in caplog.text


async def test_without_proxies_of_its_own_the_client_follows_the_engines(
    pki: tuple[ssl.SSLContext, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The engine's proxy (`trust`); a client given its own (the agent's environment's,
    even none at all) ignores the engine's."""
    caplog.set_level(logging.INFO)
    server_tls, certs_dir = pki
    server, port, seen = await _registry(server_tls)

    async def route(host: str, target_port: int) -> socket.socket:
        assert (host, target_port) == ("reg.test", 443)
        return socket.create_connection(("127.0.0.1", port))

    async def connect(host: str, target_port: int) -> socket.socket:
        if host == "reg.test":  # a direct connection
            target_port = port
            host = "127.0.0.1"
        sock = socket.create_connection((host, target_port))
        sock.setblocking(False)
        return sock

    try:
        async with ConnectProxy(route) as proxy:
            engine = EngineRegistries(
                {}, proxies=Proxies.from_engine_info({"HttpsProxy": proxy.url})
            )
            following = RegistryClient(connect=connect, certs_dir=certs_dir)
            following.trust(engine)
            assert (await following.manifest("reg.test", "r", "1"))[0] == b'{"n": 1}'
            await following.close()
            assert proxy.tunnels == [("reg.test:443", "")]
            address = proxy.url.removeprefix("http://")
            assert (
                f"registry connections: proxy {address} for https:// registries "
                "(the engine's settings)" in caplog.text
            )

            own = RegistryClient(connect=connect, certs_dir=certs_dir, proxies=Proxies())
            own.trust(engine)
            assert (await own.manifest("reg.test", "r", "2"))[0] == b'{"n": 1}'
            await own.close()
            assert len(proxy.tunnels) == 1  # direct this time
            assert seen == ["/v2/r/manifests/1", "/v2/r/manifests/2"]
    finally:
        server.close()


async def test_the_engines_proxy_refusing_for_want_of_the_login_it_hides_says_where_it_goes() -> (
    None
):
    async def route(host: str, port: int) -> socket.socket:
        raise AssertionError("no tunnel without the login")

    async with ConnectProxy(route, login="me:s3cret") as proxy:
        address = proxy.url.removeprefix("http://")
        masked = Proxies.from_engine_info({"HttpsProxy": f"http://xxxxx:xxxxx@{address}"})
        client = RegistryClient(proxies=None)
        client.trust(EngineRegistries({}, proxies=masked))
        with pytest.raises(RegistryError, match="407 Proxy Authentication Required") as e:
            await client.manifest("reg.test", "r", "1")
        assert (
            "the engine's proxy, whose login the engine does not tell: give the agent "
            "HTTPS_PROXY and HTTP_PROXY with the login in its environment" in str(e.value)
        )
        assert proxy.tunnels[0] == ("reg.test:443", "")  # tried without a login
        await client.close()
