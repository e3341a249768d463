"""A loopback TCP proxy in front of the test registry that counts, throttles and cuts.

Tests of the agent's downloads (README, Downloads) point a registry mirror at it. It runs
its own event loop in a thread, so that it serves the test's own process and agents run as
subprocesses alike. `down_bytes` counts what went from the registry to clients (what a
device pays for). `cut_at(n)`: once `n` bytes went down, every open connection is closed and
new ones are `held` (accepted, never answered) until `release()`: a lost link that stays
lost. `rate`: bytes/s from the registry, for all connections together (0: none).
`corrupt_at(n)`: the byte that goes down as the n-th (counted as `down_bytes`) is flipped,
once: bytes garbled on the way.

The registry is reached through `connect` (`LocalStack.registry_connect`), so the proxy
works wherever the stack runs its registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
CHUNK = 16384


class RegistryProxy:
    def __init__(self, connect: Callable[[], Awaitable[Streams]]) -> None:
        self._connect = connect
        self.port = 0
        self.down_bytes = 0
        self.connections = 0
        self.rate = 0.0
        self._cut_at: int | None = None
        self._corrupt_at: int | None = None
        self._held = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._sent_at = 0.0
        self._release: asyncio.Event | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> RegistryProxy:
        self._thread.start()
        self._run(self._start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self, coroutine: Awaitable[None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)  # type: ignore[arg-type]

    async def _start(self) -> None:
        self._release = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._release is not None:
            self._release.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        # Every task of the loop (its own) ends before it stops: one left pending would run
        # its cleanup when collected, on a closed loop (an error in whatever test runs
        # then). The closed connections end their handlers; what is left after a second (a
        # handler that opened its registry connection after the closes above, one whose
        # registry keeps a half-closed connection open, one accepted just before the server
        # closed and not started yet) is cancelled, as `asyncio.run` does at its end.
        left = asyncio.all_tasks() - {asyncio.current_task()}
        if left:
            _, left = await asyncio.wait(left, timeout=1)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    # --- controls (from any thread) ---------------------------------------------------------

    def reset(self) -> None:
        self.down_bytes = 0
        self.connections = 0

    def cut_at(self, count: int) -> None:
        self._cut_at = count

    def corrupt_at(self, count: int) -> None:
        self._corrupt_at = count

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        """Forward again (the link is back)."""
        self._cut_at = None
        self._held = False
        release = self._release
        if release is not None:
            self._loop.call_soon_threadsafe(release.set)

    def wait_held(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._held:
                return True
            time.sleep(0.05)
        return self._held

    # --- the proxy ----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self._held and self._release is not None:
                await self._release.wait()
            up_reader, up_writer = await self._connect()
            self._writers.add(up_writer)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._pipe(reader, up_writer, count=False))
                    group.create_task(self._pipe(up_reader, writer, count=True))
            finally:
                up_writer.close()
                self._writers.discard(up_writer)
        except* (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        while data := await reader.read(CHUNK):
            if count:
                data = data[: self._room(len(data))]
                await self._throttle(len(data))
                data = self._garbled(data)
                self.down_bytes += len(data)
            writer.write(data)
            await writer.drain()
            if count and self._cut_at is not None and self.down_bytes >= self._cut_at:
                self._cut()
                return
        with contextlib.suppress(OSError):
            writer.write_eof()

    def _garbled(self, data: bytes) -> bytes:
        at = self._corrupt_at
        if at is None or not self.down_bytes <= at < self.down_bytes + len(data):
            return data
        self._corrupt_at = None
        index = at - self.down_bytes
        return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]

    def _room(self, size: int) -> int:
        if self._cut_at is None:
            return size
        return max(0, min(size, self._cut_at - self.down_bytes))

    async def _throttle(self, size: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        self._sent_at = max(self._sent_at, now) + size / self.rate
        await asyncio.sleep(max(0.0, self._sent_at - now))

    def _cut(self) -> None:
        """The link is lost: every connection dropped, new ones held until `release`."""
        self._held = True
        if self._release is not None:
            self._release.clear()
        for writer in list(self._writers):
            writer.close()
