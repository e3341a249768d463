"""The agent's downloads through an HTTP proxy (`cua.download.proxy`): the environment's
variables, NO_PROXY, and the registry client's CONNECT tunnels through `cua_dev`'s proxy to
in-process registries (TLS end to end, the proxy's login, its refusals)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
from pathlib import Path

import pytest

from cua.cli import main
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
