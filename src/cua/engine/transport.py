"""HTTP/1.1 to the container engine, on h11 over asyncio streams.

The Engine API is plain HTTP/1.1 over a unix socket (or TCP, optionally TLS), with JSON
bodies and two streamed answers (a pull's progress, the event stream). h11 does the
protocol (parsing, chunked bodies, keep-alive state) without any I/O of its own; this
module does the I/O: connections over asyncio streams, a small pool of idle keep-alive
connections, and one error type for everything below HTTP (`TransportError`). An answer of
400 or more is an `APIError` with the engine's message (the engine answers 304 for a start
or stop that had nothing to do: a success). Timeouts are the caller's
(`asyncio.timeout` around a call): a cancelled request drops its connection.

Why h11 and not httpx (`AsyncHTTPTransport(uds=...)`): measured on Python 3.11, importing
httpx adds about 5.4 MiB RSS and 30 ms to `import asyncio`; h11 adds 0.4 MiB and 8 ms
(README, Performance). The agent needs one host, HTTP/1.1 and no redirects or cookies.

The address is taken the way the docker CLI takes it: `unix://PATH` or a bare path, `tcp://`
or `http://` (plain), `https://`, and `tcp://` with `DOCKER_TLS_VERIFY` set is TLS verified
against `$DOCKER_CERT_PATH/ca.pem` with the client certificate `cert.pem`/`key.pem` there
(default `~/.docker`).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import msgspec

from cua.engine.base import unreachable_reason

__all__ = [
    "APIError",
    "EngineAddress",
    "EngineHTTP",
    "Response",
    "StreamedResponse",
    "TransportError",
    "engine_address",
]

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
READ_SIZE = 65536
MAX_IDLE = 16  # idle keep-alive connections kept (the agent reads with 16 workers)


class TransportError(Exception):
    """Nothing usable came back: cannot connect, connection lost, not HTTP."""


class APIError(Exception):
    """The engine answered with a status >= 400; `message` is the engine's own text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON (msgspec's decoder: faster than the json module's on large
        listings); raises ValueError."""
        return msgspec.json.decode(self.body) if self.body.strip() else ""


@dataclass(frozen=True, slots=True)
class EngineAddress:
    """Where the engine listens. `url` is for messages; `socket_path` is set for a unix
    socket, else `host`/`port`; `tls` is the client's TLS context (None: plain)."""

    url: str
    socket_path: str = ""
    host: str = ""
    port: int = 0
    tls: ssl.SSLContext | None = None

    @property
    def plain_tcp(self) -> bool:
        """Plain HTTP over the network: what is sent can be read on the way."""
        return not self.socket_path and self.tls is None

    @property
    def host_header(self) -> str:
        return "docker" if self.socket_path else f"{self.host}:{self.port}"


def _tls_context(environ: Mapping[str, str]) -> ssl.SSLContext:
    """The docker CLI's TLS: verify the engine against ca.pem, present cert.pem/key.pem."""
    cert_dir = Path(environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    context = ssl.create_default_context(cafile=str(cert_dir / "ca.pem"))
    if (cert_dir / "cert.pem").exists():
        context.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
    return context


def engine_address(url: str, environ: Mapping[str, str] | None = None) -> EngineAddress:
    """The address of `url` (`unix://`, bare path, `tcp://`, `http://`, `https://`).

    Raises ValueError for another scheme, OSError/ssl.SSLError for unreadable certificates.
    """
    env = os.environ if environ is None else environ
    if url.startswith("/"):
        return EngineAddress(url="unix://" + url, socket_path=url)
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return EngineAddress(url=url, socket_path=parts.path)
    if parts.scheme not in ("tcp", "http", "https"):
        raise ValueError(f"unsupported engine URL {url!r}")
    verify = bool(env.get("DOCKER_TLS_VERIFY")) and parts.scheme == "tcp"
    tls = _tls_context(env) if verify or parts.scheme == "https" else None
    default_port = 2376 if tls else 2375
    return EngineAddress(
        url=url,
        host=parts.hostname or "localhost",
        port=parts.port or default_port,
        tls=tls,
    )


class _Connection:
    """One HTTP/1.1 connection; requests on it run one after the other (keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    @property
    def reusable(self) -> bool:
        return (
            self.h11.our_state is h11.IDLE
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    async def send(self, request: h11.Request, body: bytes) -> None:
        data = self.h11.send(request) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        await self.writer.drain()

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.reader.read(READ_SIZE))

    def close(self) -> None:
        self.writer.close()


class StreamedResponse:
    """A 2xx answer whose body is read as it comes (a pull's progress, events)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._buffer = b""
        self._ended = False

    async def readline(self) -> bytes:
        """The next line (with its newline), or b"" at the end of the body."""
        while b"\n" not in self._buffer and not self._ended:
            event = await _guarded(self._connection.next_event())
            if isinstance(event, h11.Data):
                self._buffer += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self._ended = True
        line, newline, rest = self._buffer.partition(b"\n")
        self._buffer = rest
        return line + newline

    @property
    def ended(self) -> bool:
        return self._ended and not self._buffer


async def _guarded(call: Any) -> Any:
    """`call`, with errors below HTTP as `TransportError`."""
    try:
        return await call
    except h11.ProtocolError as error:
        if "peer closed connection" in str(error):  # h11's words for a cut-off answer
            raise TransportError("the engine closed the connection") from None
        raise TransportError(f"not an HTTP answer: {error}") from None
    except (OSError, EOFError, asyncio.IncompleteReadError) as error:
        raise TransportError(str(error) or type(error).__name__) from None


class EngineHTTP:
    """Requests to one engine; idle keep-alive connections are reused."""

    def __init__(self, address: EngineAddress, connect_timeout: float = 60.0) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        address = self.address
        try:
            async with asyncio.timeout(self.connect_timeout):
                if address.socket_path:
                    reader, writer = await asyncio.open_unix_connection(
                        address.socket_path, limit=READ_SIZE
                    )
                else:
                    reader, writer = await asyncio.open_connection(
                        address.host, address.port, ssl=address.tls, limit=READ_SIZE
                    )
        except TimeoutError:
            raise TransportError(f"no answer within {self.connect_timeout:g} s") from None
        except OSError as error:  # ssl.SSLError is one
            # In words (`no such socket ...`), not the OS error's repr.
            raise TransportError(unreachable_reason(error)) from None
        return _Connection(reader, writer)

    def _checkout(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            connection.close()
        return None

    def _checkin(self, connection: _Connection) -> None:
        h = connection.h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            connection.h11.start_next_cycle()
            if connection.reusable and len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        body: bytes,
    ) -> h11.Request:
        target = path + ("?" + urlencode(params) if params else "")
        fields = [("Host", self.address.host_header), ("User-Agent", "cua")]
        if body:
            fields.append(("Content-Type", "application/json"))
        fields.append(("Content-Length", str(len(body))))
        fields.extend((headers or {}).items())
        return h11.Request(method=method, target=target, headers=fields)

    async def _open(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        body: bytes,
    ) -> tuple[_Connection, h11.Response]:
        """Send the request, read the answer's head. A kept-alive connection the engine
        closed meanwhile is replaced once (nothing of the answer was read)."""
        request = self._request(method, path, params, headers, body)
        connection = self._checkout()
        if connection is not None:
            try:
                return connection, await self._exchange(connection, request, body)
            except TransportError:
                connection.close()
        connection = await self._connect()
        return connection, await self._exchange(connection, request, body)

    async def _exchange(
        self, connection: _Connection, request: h11.Request, body: bytes
    ) -> h11.Response:
        try:
            await _guarded(connection.send(request, body))
            while True:
                event = await _guarded(connection.next_event())
                if isinstance(event, h11.Response):
                    return event
                if isinstance(event, h11.ConnectionClosed):
                    raise TransportError("the engine closed the connection")
                # an h11.InformationalResponse (1xx): the real answer follows
        except BaseException:
            connection.close()
            raise

    async def _read_body(self, connection: _Connection) -> bytes:
        chunks: list[bytes] = []
        while True:
            event = await _guarded(connection.next_event())
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return b"".join(chunks)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """One request, its whole answer read. Raises APIError for a status >= 400."""
        connection, head = await self._open(method, path, params, headers, body)
        try:
            data = await self._read_body(connection)
        except BaseException:
            connection.close()
            raise
        self._checkin(connection)
        if head.status_code >= 400:
            raise APIError(head.status_code, _message(data))
        return Response(head.status_code, data)

    async def upload(
        self,
        method: str,
        path: str,
        chunks: AsyncIterable[bytes],
        length: int,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/x-tar",
    ) -> Response:
        """A request whose body (`length` bytes) is sent as `chunks` come, on a connection
        of its own (an image archive); an error of `chunks` drops the connection (the
        engine discards the half-sent body). Raises APIError for a status >= 400."""
        target = path + ("?" + urlencode(params) if params else "")
        fields = [
            ("Host", self.address.host_header),
            ("User-Agent", "cua"),
            ("Content-Type", content_type),
            ("Content-Length", str(length)),
        ]
        connection = await self._connect()
        try:
            head = await _guarded(self._send_chunks(connection, method, target, fields, chunks))
            data = await self._read_body(connection)
        finally:
            connection.close()
        if head.status_code >= 400:
            raise APIError(head.status_code, _message(data))
        return Response(head.status_code, data)

    async def _send_chunks(
        self,
        connection: _Connection,
        method: str,
        target: str,
        fields: list[tuple[str, str]],
        chunks: AsyncIterable[bytes],
    ) -> h11.Response:
        h = connection.h11
        connection.writer.write(h.send(h11.Request(method=method, target=target, headers=fields)))
        async for chunk in chunks:
            connection.writer.write(h.send(h11.Data(data=chunk)) or b"")
            await connection.writer.drain()
        connection.writer.write(h.send(h11.EndOfMessage()) or b"")
        await connection.writer.drain()
        while True:
            event = await connection.next_event()
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise TransportError("the engine closed the connection")

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[StreamedResponse]:
        """A request whose answer is read as it comes; the connection is dropped after
        (a stream left early cannot be reused). Raises APIError for a status >= 400."""
        connection, head = await self._open(method, path, params, headers, b"")
        try:
            if head.status_code >= 400:
                raise APIError(head.status_code, _message(await self._read_body(connection)))
            yield StreamedResponse(connection)
        finally:
            connection.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _message(body: bytes) -> str:
    """The engine's error text: `{"message": ...}` in JSON, else the body as text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])
    return body.decode(errors="replace").strip()
