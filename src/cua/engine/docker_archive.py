"""The `docker save` archive the engine loads (`POST /images/load`), streamed from files.

Docker 20.10 loads this format (manifest.json with `Config`, `RepoTags`, `Layers`; OCI
layout archives only from Docker 25). Layers may be gzip blobs as the registry serves
them (the engine decompresses them). A layer the engine already holds as the same chain
(same parent layers) need not be in the archive: the loader looks each chain up in its
layer store before it opens the layer file (moby image/tarexport, checked on 20.10 by
`tests/integration/test_agent_download.py`), so only missing layers are sent.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

CHUNK = 1 << 20
BLOCK = 512


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padding(size: int) -> int:
    return -size % BLOCK


class DockerArchive:
    """`config` and `layers` (None: the engine holds it) as an archive naming `tag`."""

    def __init__(self, config: Path, layers: Sequence[Path | None], tag: str) -> None:
        self._config = config
        self._members: list[tuple[str, Path]] = [("config.json", config)]
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
        total = BLOCK + len(self._manifest) + _padding(len(self._manifest))
        for _, path in self._members:
            size = path.stat().st_size
            total += BLOCK + size + _padding(size)
        return total + 2 * BLOCK

    def chunks(self) -> Iterator[bytes]:
        yield _header("manifest.json", len(self._manifest))
        yield self._manifest + bytes(_padding(len(self._manifest)))
        for name, path in self._members:
            size = path.stat().st_size
            yield _header(name, size)
            with path.open("rb") as file:
                while chunk := file.read(CHUNK):
                    yield chunk
            yield bytes(_padding(size))
        yield bytes(2 * BLOCK)


def archive_bytes(archive: DockerArchive) -> bytes:
    """The whole archive in memory (tests)."""
    buffer = io.BytesIO()
    for chunk in archive.chunks():
        buffer.write(chunk)
    return buffer.getvalue()
