"""`LocalRegistry`, the agent's cache served to the engine: the engine's first attempt (TLS)
is answered as a plain HTTP server answers it, and plain HTTP requests are served
whichever way their bytes are cut."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import pytest

from cua.download.serve import LocalRegistry

pytestmark = pytest.mark.unit

# The first bytes of a TLS ClientHello: a handshake record (0x16), TLS 1.0 record version.
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)


@contextlib.asynccontextmanager
async def _registry() -> AsyncIterator[LocalRegistry]:
    registry = LocalRegistry()
    await registry.start()
    try:
        yield registry
    finally:
        await registry.close()


async def _exchange(port: int, *pieces: bytes) -> bytes:
    """Send `pieces` one after the other (a pause between), then read until the server
    closes or 0.5 s pass without a byte (keep-alive)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        reply = b""
        with contextlib.suppress(TimeoutError):
            while chunk := await asyncio.wait_for(reader.read(65536), 0.5):
                reply += chunk
        return reply
    finally:
        writer.close()


async def test_a_tls_hello_is_answered_as_by_a_plain_http_server() -> None:
    """dockerd tries HTTPS first even for a loopback registry: an HTTP answer makes its log
    say so ("server gave HTTP response to HTTPS client"), where a bare close left a warning
    of an EOF at every pull."""
    async with _registry() as registry:
        reply = await _exchange(registry.port, CLIENT_HELLO_START)
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"Connection: close\r\n" in reply

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with pytest.raises(ssl.SSLError, match=r"(?i)wrong.version.number"):
            await asyncio.open_connection("127.0.0.1", registry.port, ssl=context)


async def test_requests_are_served_however_their_bytes_are_cut() -> None:
    async with _registry() as registry:
        first = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"
        second = b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"
        reply = await _exchange(registry.port, first[:5], first[5:] + second[:7], second[7:])
        assert reply.count(b"HTTP/1.1 200 ") == 2
        assert reply.count(b"{}") == 1  # the HEAD has no body
        unknown = b"GET /v2/cua-unknown/manifests/1 HTTP/1.1\r\nHost: x\r\n\r\n"
        assert (await _exchange(registry.port, unknown)).startswith(b"HTTP/1.1 404 ")
