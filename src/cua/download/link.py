"""One connection to a registry, read into one fixed buffer.

A blob's bytes go from the socket (or the TLS layer) into the link's buffer and from there
to their reader (the cache file's write, the digest) with no copy in Python between: the
event loop receives into the buffer (`asyncio.BufferedProtocol`), `take` hands the bytes
received so far over as a view of it. A stream reader copies every byte twice more and
moves what is left of its buffer at each read: on 100 MB that was most of the agent's CPU
per downloaded byte (measured: about 300 ms of CPU to fetch five 20 MB blobs over
loopback into files, against about 140 ms here, 100 of them the file writes). The buffer
is 1 MiB: each read and each write of the cache file is a system call and a wake-up of the
fetch, and over loopback the socket holds about that much at each wake-up (measured on 5
x 20 MB, alternating: about 120 reads of 0.8 MB each, and 245 ms of the agent's CPU
against 310 ms with 256 KiB, the event loop's own read size). It is an anonymous memory
map, whose pages take memory only once written: each read starts at its beginning again
once all was taken, so a link that brings a few kilobytes at a time (a cellular one) holds
those few pages, not the MiB a zeroed `bytearray` would. When the reader falls behind (a
bandwidth limit), the buffer fills up and the link stops reading: TCP slows the sender.
"""

from __future__ import annotations

import asyncio
import mmap
import socket
import ssl
from collections.abc import Awaitable, Callable

BUFFER_SIZE = 1 << 20

SocketConnector = Callable[[str, int], Awaitable[socket.socket]]
"""Opens a connected TCP socket to (host, port): where tests and the bench reach their
registry (another network namespace, a proxy); TLS is the link's."""


class Link(asyncio.BufferedProtocol):
    """A connection: `write` a request, `take` what comes back."""

    def __init__(self, size: int = BUFFER_SIZE) -> None:
        self._size = size
        self._buffer = memoryview(b"")  # made when bytes come (`idle` gives it back)
        self._start = 0  # the first byte not taken yet
        self._end = 0  # the end of the bytes received
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._ended = False  # the peer closed, or the connection was lost
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0  # when it was kept for a next request (`RegistryClient`)

    # --- asyncio.BufferedProtocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self._buffer:
            self._buffer = memoryview(mmap.mmap(-1, self._size))
        return self._buffer[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        if self._end == len(self._buffer) and self._transport is not None:
            self._transport.pause_reading()  # until its reader has taken it all
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- the client's side -------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """The size of the buffer the link holds now (0 while idle)."""
        return len(self._buffer)

    def usable(self) -> bool:
        """Open on both sides, as far as the event loop has seen."""
        return not self._ended and self._transport is not None and not self._transport.is_closing()

    def write(self, data: bytes) -> None:
        """Queue `data` (a request: small; the transport sends it as it can)."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def idle(self) -> None:
        """The link waits for its next request, all it received taken: its buffer is given
        back (an idle agent keeps no MiB per kept connection)."""
        if self._start == self._end:
            self._buffer = memoryview(b"")
            self._start = self._end = 0

    async def take(self) -> memoryview:
        """The bytes received since the last `take` (waiting for some), as a view of the
        buffer that stays valid until the next `take`; empty when the peer closed the
        connection; OSError when the connection broke."""
        if self._start == self._end:
            self._start = self._end = 0  # what was taken is done with: the buffer is free
            if self._paused and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            if not self._ended:
                waiter = self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
        if self._start == self._end:
            if self._error is not None:
                raise OSError(str(self._error) or type(self._error).__name__)
            return self._buffer[:0]
        chunk = self._buffer[self._start : self._end]
        self._start = self._end
        return chunk


async def open_link(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    connect: SocketConnector | None = None,
) -> Link:
    """A link to (host, port), in TLS verified for `host` when `tls` is given; `connect`:
    how the TCP connection is made (None: the event loop's, with name resolution)."""
    loop = asyncio.get_running_loop()
    if connect is None:
        _, link = await loop.create_connection(Link, host, port, ssl=tls)
        return link
    sock = await connect(host, port)
    try:
        _, link = await loop.create_connection(
            Link, sock=sock, ssl=tls, server_hostname=host if tls is not None else None
        )
    except BaseException:
        sock.close()
        raise
    return link
