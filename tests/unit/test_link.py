"""`Link`, the registry client's connection: what comes in is handed over as views of one
buffer, in order and whole, however slowly it is taken; the end and a reset are told."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from cua.download.link import Link, open_link
from cua_dev.tlsgen import generate_tls

pytestmark = pytest.mark.unit

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _serving(handle: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _connect(port: int, size: int) -> Link:
    _, link = await asyncio.get_running_loop().create_connection(
        lambda: Link(size), "127.0.0.1", port
    )
    return link


async def _take_slowly(link: Link, size: int) -> tuple[bytes, set[int]]:
    """All the link brings, the first 64 KiB taken slowly (the buffer fills up, reading
    stops); and the ids of the buffers the chunks were views of."""
    received = bytearray()
    buffers = set()
    while chunk := await link.take():
        assert len(chunk) <= size
        buffers.add(id(chunk.obj))
        received += chunk
        if len(received) < 64 * 1024:
            await asyncio.sleep(0.001)
    link.close()
    return bytes(received), buffers


async def test_a_body_larger_than_the_buffer_taken_slowly_comes_whole_as_views_of_it() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB through a 4 KiB buffer
    sent = asyncio.Event()

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        sent.set()
        writer.close()

    async with _serving(handle) as port:
        received, buffers = await _take_slowly(await _connect(port, 4096), 4096)
        assert sent.is_set()
        assert received == data
        assert len(buffers) == 1  # every chunk a view of the one buffer: nothing copied


async def test_over_tls_too_a_slow_reader_gets_every_byte_in_order(tmp_path: Path) -> None:
    pki = generate_tls(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    client_tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    data = bytes(range(251)) * 4096  # ~1 MiB, not a multiple of any record or buffer size

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    async with _serving(handle, server_tls) as port:
        _, link = await asyncio.get_running_loop().create_connection(
            lambda: Link(4096), "127.0.0.1", port, ssl=client_tls, server_hostname="localhost"
        )
        received, _ = await _take_slowly(link, 4096)
        assert received == data


async def test_the_peer_closing_ends_the_bytes_and_a_reset_is_an_error() -> None:
    async def closes(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"last words")
        await writer.drain()
        writer.close()

    async def resets(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"partial")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # an RST, as a crashed registry or a dropped link sends

    async with _serving(closes) as port:
        link = await open_link("127.0.0.1", port, None)
        received = bytearray()
        while chunk := await link.take():
            received += chunk
        assert bytes(received) == b"last words"
        assert not link.usable()
        assert await link.take() == b""  # and it stays ended
    async with _serving(resets) as port:
        link = await open_link("127.0.0.1", port, None)
        assert await link.take() == b"partial"
        with pytest.raises(OSError, match="reset"):
            await link.take()
        link.close()


async def test_a_link_through_a_given_socket() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    asked: list[tuple[str, int]] = []
    async with _serving(echo) as port:

        async def connect(host: str, wanted_port: int) -> socket.socket:
            asked.append((host, wanted_port))
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            return sock

        link = await open_link("registry.example", 5000, None, connect)
        link.write(b"hello")
        assert await link.take() == b"hello"
        assert asked == [("registry.example", 5000)]
        link.close()
