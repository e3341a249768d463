"""The Engine API's HTTP client (`cua.engine.transport`) against an in-process HTTP server on
a unix socket: keep-alive reuse, a connection the server closed, statuses, streams; and the
reads `DockerEngine` shares."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cua.engine import docker
from cua.engine.docker import DockerEngine
from cua.engine.transport import APIError, EngineHTTP, TransportError, engine_address

pytestmark = pytest.mark.unit

Answer = Callable[[bytes], bytes]


@contextlib.asynccontextmanager
async def _server(tmp_path: Path, answer: Answer) -> AsyncIterator[tuple[EngineHTTP, list[int]]]:
    """A server answering each request head with `answer(head)` (whole raw answers); the
    client, and the number of requests per connection."""
    per_connection: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_connection.append(0)
        index = len(per_connection) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                per_connection[index] += 1
                reply = answer(head)
                if not reply:  # close without answering
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    path = tmp_path / "engine.sock"
    server = await asyncio.start_unix_server(serve, path=str(path))
    http = EngineHTTP(engine_address(f"unix://{path}"), connect_timeout=2)
    try:
        yield http, per_connection
    finally:
        await http.aclose()
        server.close()


def _json(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 " + status.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


async def test_requests_reuse_one_connection(tmp_path: Path) -> None:
    async with _server(tmp_path, lambda _head: _json("200 OK", b'{"a": 1}')) as (http, counts):
        for _ in range(3):
            assert (await http.request("GET", "/x", params={"all": "1"})).json() == {"a": 1}
    assert counts == [3]


async def test_not_modified_is_a_success_and_errors_carry_the_engines_message(
    tmp_path: Path,
) -> None:
    def answer(head: bytes) -> bytes:
        if head.startswith(b"POST /start"):
            return b"HTTP/1.1 304 Not Modified\r\n\r\n"
        return _json("404 Not Found", b'{"message": "No such container: x"}')

    async with _server(tmp_path, answer) as (http, _counts):
        assert (await http.request("POST", "/start")).status == 304
        with pytest.raises(APIError) as raised:
            await http.request("GET", "/containers/x/json")
    assert (raised.value.status, raised.value.message) == (404, "No such container: x")


async def test_a_kept_connection_the_server_closed_is_replaced(tmp_path: Path) -> None:
    seen: list[bytes] = []

    def answer(head: bytes) -> bytes:
        seen.append(head)
        if len(seen) == 2:
            return b""  # the kept-alive connection dies under the second request
        return _json("200 OK", b"{}")

    async with _server(tmp_path, answer) as (http, counts):
        await http.request("GET", "/one")
        assert (await http.request("GET", "/two")).json() == {}
    assert counts == [2, 1]


async def test_streamed_lines_and_a_missing_socket(tmp_path: Path) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab\nc\r\n3\r\nd\ne\r\n0\r\n\r\n"
    )
    async with (
        _server(tmp_path, lambda _head: chunked) as (http, _counts),
        http.stream("GET", "/events") as response,
    ):
        lines = [await response.readline() for _ in range(4)]
    assert lines == [b"ab\n", b"cd\n", b"e", b""]
    missing = EngineHTTP(engine_address(f"unix://{tmp_path}/none.sock"), connect_timeout=2)
    with pytest.raises(TransportError, match=r"^no such socket \(is the engine installed"):
        await missing.request("GET", "/version")


async def test_pulls_starting_together_share_one_read_of_the_engines_info(tmp_path: Path) -> None:
    """`GET /info` is costly for dockerd, and the first pulls after the agent's start used
    to make one each."""
    paths: list[str] = []

    def answer(head: bytes) -> bytes:
        path = head.split(b" ", 2)[1].decode().split("?")[0]
        paths.append(path)
        version = {"ApiVersion": "1.41", "Os": "linux", "Arch": "amd64"}
        info = {
            "DockerRootDir": "/data/docker",
            "RegistryConfig": {"IndexConfigs": {"lan:5000": {"Secure": False}}},
        }
        body = version if path == "/version" else info
        return _json("200 OK", json.dumps(body).encode())

    async with _server(tmp_path, answer):
        engine = DockerEngine(f"unix://{tmp_path / 'engine.sock'}")
        try:
            roots = await asyncio.gather(*(engine.data_root() for _ in range(5)))
            assert roots == ["/data/docker"] * 5
            assert await engine.data_root() == "/data/docker"
            registries = await engine.engine_registries()  # from the same read
            assert registries.listed == {"lan:5000": False}
        finally:
            await engine.close()
    assert [p for p in paths if p.endswith("/info")] == ["/v1.41/info"]


async def test_the_engines_info_is_read_again_once_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart or a reload of the engine changes its registry settings: the agent sees
    them at the next read, `INFO_FRESH_FOR` after the last, without a restart of its own."""
    monkeypatch.setattr(docker, "INFO_FRESH_FOR", 0.2)
    mirrors = ["http://first.lan:5000"]
    reads: list[str] = []

    def answer(head: bytes) -> bytes:
        path = head.split(b" ", 2)[1].decode().split("?")[0]
        if path == "/version":
            body: dict[str, Any] = {"ApiVersion": "1.41", "Os": "linux", "Arch": "amd64"}
        else:
            reads.append(path)
            body = {"RegistryConfig": {"Mirrors": list(mirrors)}}
        return _json("200 OK", json.dumps(body).encode())

    async with _server(tmp_path, answer):
        engine = DockerEngine(f"unix://{tmp_path / 'engine.sock'}")
        try:
            assert (await engine.engine_registries()).mirrors_of("docker.io") == ["first.lan:5000"]
            mirrors[0] = "http://second.lan:5000"  # the engine reloaded
            assert (await engine.engine_registries()).mirrors_of("docker.io") == ["first.lan:5000"]
            await asyncio.sleep(0.25)
            assert (await engine.engine_registries()).mirrors_of("docker.io") == ["second.lan:5000"]
        finally:
            await engine.close()
    assert len(reads) == 2


async def test_the_engines_layers_are_read_with_one_inspect_per_image_ever(
    tmp_path: Path,
) -> None:
    """An agent download's start waits for the engine's layers: each image is inspected once
    (its ID is its config's digest: its layers never change), not at every pull."""
    images = {"sha256:a": ["l1"], "sha256:b": ["l1", "l2"]}
    paths: list[str] = []

    def answer(head: bytes) -> bytes:
        path = head.split(b" ", 2)[1].decode().split("?")[0]
        paths.append(path)
        if path == "/version":
            body: object = {"ApiVersion": "1.41", "Os": "linux", "Arch": "amd64"}
        elif path.endswith("/images/json"):
            body = [{"Id": image_id} for image_id in images]
        else:
            image_id = path.split("/")[-2].replace("%3A", ":")
            if image_id not in images:
                return _json("404 Not Found", b'{"message": "no such image"}')
            body = {"Id": image_id, "RootFS": {"Layers": images[image_id]}}
        return _json("200 OK", json.dumps(body).encode())

    def inspects() -> list[str]:
        return sorted(p.split("/")[-2] for p in paths if p.endswith("/json") and "%3A" in p)

    async with _server(tmp_path, answer):
        engine = DockerEngine(f"unix://{tmp_path / 'engine.sock'}")
        try:
            assert await engine.layer_chains() == [["l1"], ["l1", "l2"]]
            assert inspects() == ["sha256%3Aa", "sha256%3Ab"]
            assert await engine.layer_chains() == [["l1"], ["l1", "l2"]]
            assert inspects() == ["sha256%3Aa", "sha256%3Ab"]  # none again
            images["sha256:c"] = ["l3"]
            del images["sha256:a"]
            assert await engine.layer_chains() == [["l1", "l2"], ["l3"]]
            assert inspects() == ["sha256%3Aa", "sha256%3Ab", "sha256%3Ac"]
        finally:
            await engine.close()
