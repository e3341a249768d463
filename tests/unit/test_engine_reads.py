"""`DockerEngine`'s reads for agent downloads, against an in-process engine on a unix
socket: the reads the pulls of one update share."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cua.engine.docker import DockerEngine

pytestmark = pytest.mark.unit

VERSION = {"ApiVersion": "1.41", "Os": "linux", "Arch": "amd64"}


async def test_pulls_starting_together_share_one_read_of_the_data_root(tmp_path: Path) -> None:
    """`GET /info` is costly for dockerd, and the first pulls after the agent's start used
    to make one each."""
    paths: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode().split("?")[0]
                paths.append(path)
                await asyncio.sleep(0.01)  # every caller is waiting by now
                body = json.dumps(
                    VERSION if path == "/version" else {"DockerRootDir": "/data/docker"}
                ).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    socket_path = tmp_path / "engine.sock"
    server = await asyncio.start_unix_server(serve, path=str(socket_path))
    engine = DockerEngine(f"unix://{socket_path}")
    try:
        roots = await asyncio.gather(*(engine.data_root() for _ in range(5)))
        assert roots == ["/data/docker"] * 5
        assert await engine.data_root() == "/data/docker"
    finally:
        await engine.close()
        server.close()
    assert [p for p in paths if p.endswith("/info")] == ["/v1.41/info"]
