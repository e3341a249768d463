"""The agent's cache served to the engine as a registry on a loopback port.

With `download: "agent"`, the engine pulls an image the agent is fetching from this server
(`127.0.0.1:<port>/cua-<token>:<tag>`; Docker allows plain HTTP to 127.0.0.0/8 registries
by default), then the agent names the result with the desired reference: the engine pulls
and unpacks each layer as it does from any registry, while the agent fetches it. Only the
images of running pulls are served (`offer` → `withdraw`), under names no one can guess,
read-only. An offer is made when the pull starts, so the engine's own start (its ping, its
manifest request) overlaps the agent's manifest and config requests; what it asks for
waits until the pull knows it: the manifest as the registry sent it and each blob as it
lands in the cache, its last byte held back until all of it is there
(`landing.FollowingBlob`); the engine checks each blob against its digest.

HTTP/1.1 on h11 (the library the rest of the agent uses), keep-alive; GET and HEAD of
`/v2/`, `/v2/<name>/manifests/<ref>` and `/v2/<name>/blobs/<digest>`; anything else 404.
The engine tries HTTPS first, even on loopback, and moves to HTTP on any error: a TLS hello
gets the 400 a plain HTTP server sends, so that dockerd's log says what happened ("server
gave HTTP response to HTTPS client") instead of a warning of an EOF at every pull.
`touched` tells whether the engine reached an offer at all: an engine that cannot reach
the port (another network namespace, another host) makes the agent load an archive instead.
Blobs of layers the engine holds are `refused` (404, `unknown_to_engine`): an engine that
asks for one does not know that layer by its digest, and gets an archive without it; every
offer holding that layer is told at once (`Offer.refused_one`), as its pull would fail on
the same layer.
Bodies go out with `sendfile` (`loop.sendfile`), from the cache's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

import h11

log = logging.getLogger(__name__)

READ_SIZE = 65536
MAX_REQUEST_HEAD = 16384
TLS_HANDSHAKE = b"\x16"
# What Go's HTTP server (the registry's) answers to a TLS hello: the engine's TLS client sees
# "HTTP/" and gives up on TLS at once ("server gave HTTP response to HTTPS client").
NOT_TLS = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\n400 Bad Request"
)


class Blob(Protocol):
    """Bytes of one blob: exactly `size` of them, as they land, as regions of files
    (sent with `sendfile`)."""

    @property
    def size(self) -> int: ...

    def regions(self) -> AsyncIterator[tuple[BinaryIO, int, int]]: ...


class WholeFile:
    """A complete file as a blob."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    async def regions(self) -> AsyncIterator[tuple[BinaryIO, int, int]]:
        with self.path.open("rb") as file:
            yield file, 0, self.size


class Offer:
    """One image served while its pull runs. Named at once, so that the engine can start
    pulling before the agent knows the image: its requests wait until the pull `describe`s
    the manifest, then `fill`s the blobs (what the engine asks for before that waits, and
    gets a 404 if the offer is withdrawn first)."""

    def __init__(self, name: str, unknown_to_engine: set[str] | None = None) -> None:
        self.name = name
        self._unknown_to_engine = unknown_to_engine if unknown_to_engine is not None else set()
        self.manifest = b""
        self.media_type = ""
        self.manifest_digest = ""
        self.blobs: dict[str, Callable[[], Blob]] = {}  # digest -> a fresh reader of its bytes
        self.refused: frozenset[str] = frozenset()  # layers the engine holds: not served
        self.touched = False  # the engine asked for something of this offer
        # The engine asked (through any offer) for a blob this offer refuses: this offer's
        # pull fails on it too.
        self.refused_one = asyncio.Event()
        self.withdrawn = False
        self.described = asyncio.Event()  # the manifest is known (or the offer withdrawn)
        self.filled = asyncio.Event()  # the blobs are known (or the offer withdrawn)

    def describe(self, manifest: bytes, media_type: str, manifest_digest: str) -> None:
        self.manifest = manifest
        self.media_type = media_type
        self.manifest_digest = manifest_digest
        self.described.set()

    def fill(self, blobs: Iterable[tuple[str, Callable[[], Blob]]], refused: Iterable[str]) -> None:
        self.blobs = dict(blobs)
        self.refused = frozenset(refused)
        if not self.refused.isdisjoint(self._unknown_to_engine):  # asked for before
            self.refused_one.set()
        self.filled.set()


Listen = Callable[[], socket.socket]


def loopback_socket() -> socket.socket:
    """A listening TCP socket on 127.0.0.1, a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class LocalRegistry:
    """`listen`: makes the (bound, not yet listening) socket; tests make it where their
    engine's loopback is."""

    def __init__(self, listen: Listen = loopback_socket) -> None:
        self._listen = listen
        self._server: asyncio.Server | None = None
        self._offers: dict[str, Offer] = {}
        # Layers the engine asked for though it holds them: it does not know them by their
        # digest (loaded ones). It shares one download of a blob among its pulls: such a
        # request fails every pull that needs that layer, whichever offer it came through.
        self.unknown_to_engine: set[str] = set()
        self._lock = asyncio.Lock()
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        async with self._lock:
            if self._server is not None:
                return
            sock = self._listen()
            sock.listen(64)
            sock.setblocking(False)
            self._server = await asyncio.start_server(self._serve, sock=sock)
            self.port = sock.getsockname()[1]
            log.debug("serving pulls to the engine on %s", self.address)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def offer(self) -> Offer:
        """A new offer under a name no one can guess, served until `withdraw`n."""
        offer = Offer(f"cua-{secrets.token_hex(8)}", self.unknown_to_engine)
        self._offers[offer.name] = offer
        return offer

    def withdraw(self, offer: Offer) -> None:
        self._offers.pop(offer.name, None)
        offer.withdrawn = True
        offer.described.set()
        offer.filled.set()

    # --- HTTP ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests one after the other on the connection (keep-alive), each parsed by a
        fresh h11 connection: bodies go out with `sendfile`, past h11."""
        try:
            pending = await reader.read(READ_SIZE)
            if pending.startswith(TLS_HANDSHAKE):
                writer.write(NOT_TLS)
                return
            while True:
                connection = h11.Connection(
                    our_role=h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD
                )
                if pending:  # (empty data would tell h11 the connection closed)
                    connection.receive_data(pending)
                request = await self._request(connection, reader)
                if request is None:
                    return
                pending = connection.trailing_data[0]
                await self._answer(connection, writer, request)
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError, RuntimeError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    @staticmethod
    async def _request(
        connection: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Request | None:
        request = None
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(READ_SIZE))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(
        self, connection: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request
    ) -> None:
        method = request.method.decode()
        path = request.target.decode().split("?", 1)[0]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await _send(connection, writer, 405, b"")
            return
        if path in ("/v2/", "/v2"):
            await _send(connection, writer, 200, b"{}", head=head)
            return
        name, kind, reference = _route(path)
        offer = self._offers.get(name)
        if offer is None:
            await _send(connection, writer, 404, b"")
            return
        offer.touched = True
        await (offer.described if kind == "manifests" else offer.filled).wait()
        if offer.withdrawn:
            await _send(connection, writer, 404, b"")
            return
        if kind == "manifests":
            headers = [
                ("Content-Type", offer.media_type),
                ("Docker-Content-Digest", offer.manifest_digest),
            ]
            await _send(connection, writer, 200, offer.manifest, headers, head=head)
            return
        opener = offer.blobs.get(reference) if kind == "blobs" else None
        if kind == "blobs" and reference in offer.refused:
            self.unknown_to_engine.add(reference)
            for holding in self._offers.values():
                if reference in holding.refused:
                    holding.refused_one.set()
        if opener is None:
            await _send(connection, writer, 404, b"")
            return
        blob = opener()
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Docker-Content-Digest", reference),
            ("Content-Length", str(blob.size)),
        ]
        writer.write(connection.send(h11.Response(status_code=200, headers=headers)) or b"")
        if head:
            await writer.drain()
            return
        loop = asyncio.get_running_loop()
        async for file, offset, count in blob.regions():
            await loop.sendfile(writer.transport, file, offset, count)


def _route(path: str) -> tuple[str, str, str]:
    """`/v2/<name>/<kind>/<reference>` -> (name, kind, reference); ("", "", "") otherwise."""
    parts = path.removeprefix("/v2/").split("/")
    if len(parts) >= 3 and parts[-2] in ("manifests", "blobs"):
        return "/".join(parts[:-2]), parts[-2], parts[-1]
    return "", "", ""


async def _send(
    connection: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
    *,
    head: bool = False,
) -> None:
    fields = [*(headers or []), ("Content-Length", str(len(body)))]
    fields.append(("Docker-Distribution-API-Version", "registry/2.0"))
    writer.write(connection.send(h11.Response(status_code=status, headers=fields)) or b"")
    if body and not head:
        writer.write(body)
    await writer.drain()
