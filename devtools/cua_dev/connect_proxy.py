"""Loopback relays in the running event loop, for the agent's download tests: an HTTP proxy
that opens CONNECT tunnels only (`ConnectProxy`), and a TLS server in front of a registry
(`TlsFront`).

Tests of the agent's downloads through a proxy (README, Downloads) point `HTTPS_PROXY` at
`ConnectProxy`. `route(host, port)` opens the tunnel's far end (the tests' registries:
in-process fakes, or the stack's registry in its network namespace), so no tunnel leaves the
machine. `login`: the `user:password` it demands (407 without it). `tunnels`: each CONNECT's
target and its `Proxy-Authorization` header ("" when none).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

Route = Callable[[str, int], Awaitable[socket.socket]]


class _Relay:
    """A server on a free loopback port whose connection handlers are tasks it owns: those
    still running are cancelled when it closes."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            self._tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def _relay(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, far: socket.socket
) -> None:
    """The connection's bytes to `far` and back, until both sides end."""
    far_reader, far_writer = await asyncio.open_connection(sock=far)
    await asyncio.gather(
        _pipe(reader, far_writer), _pipe(far_reader, writer), return_exceptions=True
    )


class ConnectProxy(_Relay):
    def __init__(self, route: Route, login: str = "") -> None:
        super().__init__()
        self._route = route
        self._wanted = "Basic " + base64.b64encode(login.encode()).decode() if login else ""
        self.tunnels: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in head[1:] if line)}
        authorization = headers.get("proxy-authorization", "")
        self.tunnels.append((target, authorization))
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        if self._wanted and authorization != self._wanted:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
            )
            return
        host, _, port = target.rpartition(":")
        try:
            far = await self._route(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _relay(reader, writer, far)


class TlsFront(_Relay):
    """A TLS server (`tls`, Python's: it ends a plain HTTP request without answering it)
    relaying each connection to the socket `far()` opens (a registry's)."""

    def __init__(self, far: Callable[[], Awaitable[socket.socket]], tls: ssl.SSLContext) -> None:
        super().__init__(tls)
        self._far = far

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _relay(reader, writer, await self._far())


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
