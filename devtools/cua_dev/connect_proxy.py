"""An HTTP proxy that opens CONNECT tunnels only, on loopback, in the running event loop.

Tests of the agent's downloads through a proxy (README, Downloads) point `HTTPS_PROXY` at
it. `route(host, port)` opens the tunnel's far end (the tests' registries: in-process fakes,
or the stack's registry in its network namespace), so no tunnel leaves the machine.
`login`: the `user:password` it demands (407 without it). `tunnels`: each CONNECT's target
and its `Proxy-Authorization` header ("" when none).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType

Route = Callable[[str, int], Awaitable[socket.socket]]


class ConnectProxy:
    def __init__(self, route: Route, login: str = "") -> None:
        self._route = route
        self._wanted = "Basic " + base64.b64encode(login.encode()).decode() if login else ""
        self.tunnels: list[tuple[str, str]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
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
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = {
                k.lower(): v for k, _, v in (line.partition(": ") for line in head[1:] if line)
            }
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
            far_reader, far_writer = await asyncio.open_connection(sock=far)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(
                _pipe(reader, far_writer), _pipe(far_reader, writer), return_exceptions=True
            )
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
