"""How a blob being fetched lands in the cache, and its bytes followed as they land.

A `Landing` tells how far one pull's blob has come (bytes written, a restart from byte 0,
complete); a `FollowingBlob` hands those bytes on as they land, its last byte held back
until all of the blob is in the cache: to the engine's pull from the agent's registry as
file regions (`regions`, sent with `sendfile`; the engine checks the digest), or to an
archive member (`chunks`, hashed on the way: the last byte goes only if the digest matches).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import BinaryIO

from cua.download.cache import BlobCache
from cua.download.manifests import Blob
from cua.download.registry import RegistryError

READ_CHUNK = 1 << 20


class Landing:
    """How far one pull's blob has landed in the cache, for the engine that follows it
    (`FollowingBlob`). `written`: bytes in the partial file; `generation` changes when that
    file starts over from byte 0; `complete`: all of it is in the cache (not yet checked
    against its digest: that is the engine's pull's, or `FollowingBlob.chunks`')."""

    def __init__(self, cache: BlobCache, blob: Blob) -> None:
        self.cache = cache
        self.blob = blob
        self.written = 0
        self.generation = 0
        self.complete = False
        self.changed = asyncio.Event()
        self.wanted = asyncio.Event()  # the engine asked for it: fetch it

    def follow(self) -> FollowingBlob:
        """The blob's bytes for the engine, as they land; its fetch starts now."""
        self.wanted.set()
        return FollowingBlob(self)

    def wrote(self, count: int) -> None:
        self.written += count
        self.changed.set()

    def restarted(self) -> None:
        self.written = 0
        self.generation += 1
        self.changed.set()


class FollowingBlob:
    """A blob's bytes for the engine as they land, its last byte held back until all of it
    is in the cache. Served to the engine's pull (`regions`), the engine checks the blob
    against its digest, as it does with any registry's; as an archive member (`chunks`,
    `docker load` checks only the unpacked layers), the bytes are hashed as they are sent
    and the last one goes only if they match. A blob that starts over from byte 0 once
    bytes were sent (a registry ignoring `Range`) fails the load: the pull fails, the next
    one loads from the cache."""

    def __init__(self, landing: Landing) -> None:
        self.landing = landing
        self.size = landing.blob.size

    async def regions(self) -> AsyncIterator[tuple[BinaryIO, int, int]]:
        """(file, offset, count) of the bytes as they land, in order, the file open until
        the next item is asked for."""
        landing = self.landing
        sent = 0
        file = None
        generation = landing.generation
        try:
            while sent < self.size:
                landing.changed.clear()
                if landing.generation != generation:
                    if sent:
                        raise RegistryError(f"blob {landing.blob.digest} started over")
                    generation = landing.generation
                    if file is not None:
                        file.close()
                        file = None
                limit = self.size if landing.complete else min(landing.written, self.size - 1)
                if limit > sent:
                    if file is None:
                        path = landing.cache.path(landing.blob.digest)
                        if not landing.complete:
                            path = landing.cache.partial_path(landing.blob.digest)
                        file = path.open("rb")  # stays valid when the file is renamed
                    count = limit - sent
                    yield file, sent, count
                    sent += count
                    continue
                await landing.changed.wait()
        finally:
            if file is not None:
                file.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes, checked against the blob's digest before the last one goes; one that
        does not match is discarded from the cache (the next pull fetches it again)."""
        digest = self.landing.blob.digest
        hasher = hashlib.sha256()
        sent = 0
        async for file, offset, count in self.regions():
            file.seek(offset)
            left = count
            while left > 0:
                chunk = file.read(min(left, READ_CHUNK))
                if not chunk:
                    raise RegistryError(f"blob {digest} shrank")
                left -= len(chunk)
                hasher.update(chunk)
                sent += len(chunk)
                if sent == self.size and "sha256:" + hasher.hexdigest() != digest:
                    self.landing.cache.remove([digest])
                    raise RegistryError(f"blob {digest} does not match its digest: discarded")
                yield chunk
