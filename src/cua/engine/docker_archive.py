"""The `docker save` archive the engine loads (`POST /images/load`), streamed.

Docker 20.10 loads this format (manifest.json with `Config`, `RepoTags`, `Layers`; OCI
layout archives only from Docker 25). Layers may be gzip blobs as the registry serves
them (the engine decompresses them). A layer the engine already holds as the same chain
(same parent layers) need not be in the archive: the loader looks each chain up in its
layer store before it opens the layer file (moby image/tarexport, checked on 20.10 by
`tests/integration/test_agent_download.py`), so only missing layers are sent.

Each member is a `Member`: its size is known in advance (from the registry's manifest), so
the archive's length is too (the request's Content-Length), and its bytes may still be
arriving while the archive is sent: the engine unpacks the archive as the agent downloads.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20
BLOCK = 512


class Member(Protocol):
    """Bytes of one archive member: exactly `size` of them, as they come."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class FileMember:
    """A complete file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    async def chunks(self) -> AsyncIterator[bytes]:
        with self.path.open("rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


class DockerArchive:
    """`config` and `layers` (None: the engine holds it) as an archive naming `tag`."""

    def __init__(self, config: Member, layers: Sequence[Member | None], tag: str) -> None:
        self._members: list[tuple[str, Member]] = [("config.json", config)]
        names = []
        for index, layer in enumerate(layers):
            name = f"layer{index}.tar"
            names.append(name)
            if layer is not None:
                self._members.append((name, layer))
        manifest = [{"Config": "config.json", "RepoTags": [tag], "Layers": names}]
        self._manifest = json.dumps(manifest).encode()

    @property
    def length(self) -> int:
        """Bytes of the whole archive (the request's Content-Length)."""
        total = BLOCK + len(self._manifest) + len(_padding(len(self._manifest)))
        for _, member in self._members:
            total += BLOCK + member.size + len(_padding(member.size))
        return total + 2 * BLOCK

    async def chunks(self) -> AsyncIterator[bytes]:
        yield _header("manifest.json", len(self._manifest))
        yield self._manifest + _padding(len(self._manifest))
        for name, member in self._members:
            yield _header(name, member.size)
            sent = 0
            async for chunk in member.chunks():
                sent += len(chunk)
                yield chunk
            if sent != member.size:
                raise ValueError(f"archive member {name}: {sent} bytes, {member.size} expected")
            yield _padding(member.size)
        yield bytes(2 * BLOCK)


async def archive_bytes(archive: DockerArchive) -> bytes:
    """The whole archive in memory (tests)."""
    return b"".join([chunk async for chunk in archive.chunks()])
