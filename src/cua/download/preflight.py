"""The disk-space check before the first byte of a download (pure, plus `free_bytes`).

Two places fill: the cache (the compressed blobs still to fetch) and the engine's data root
(`DockerRootDir`): `docker load` first copies the archive there (the compressed size), then
unpacks the layers (estimated at `UNPACK_RATIO` × compressed: images compress 2-3× with
gzip). When both are on one filesystem the needs add up. A margin (`RESERVE`) stays free
so that the device keeps working. The data root's free space is read with statvfs of the
path the engine reports: right when the agent runs on the engine's host (the unix socket
case); for a remote engine the path is not ours and the check is skipped (logged).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

UNPACK_RATIO = 3
RESERVE = 16 << 20


@dataclass(frozen=True, slots=True)
class Disk:
    path: str
    free: int
    device: int  # st_dev: the same value means the same filesystem


@dataclass(frozen=True, slots=True)
class Shortage:
    """Not enough space: where, how much is needed and how much is free (bytes)."""

    path: str
    needed: int
    free: int

    def __str__(self) -> str:
        return (
            f"not enough disk space in {self.path}: {_mib(self.needed)} needed "
            f"(with {_mib(RESERVE)} kept free), {_mib(self.free)} free"
        )


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB"


def free_bytes(path: str) -> Disk | None:
    """Free space (for an unprivileged writer) of the filesystem holding `path`; None when
    the path does not exist here."""
    try:
        stat = os.statvfs(path)
        device = os.stat(path).st_dev
    except OSError:
        return None
    return Disk(path, stat.f_bavail * stat.f_frsize, device)


def check(to_fetch: int, to_load: int, cache: Disk, root: Disk | None) -> Shortage | None:
    """`to_fetch`: compressed bytes still to download into the cache; `to_load`: compressed
    bytes of the layers the engine will load (it holds the others). None when it fits."""
    root_need = to_load + to_load * UNPACK_RATIO if root is not None else 0
    cache_need = to_fetch + RESERVE
    if root is not None and root.device == cache.device:
        if cache_need + root_need > cache.free:
            return Shortage(cache.path, cache_need + root_need, cache.free)
        return None
    if cache_need > cache.free:
        return Shortage(cache.path, cache_need, cache.free)
    if root is not None and root_need + RESERVE > root.free:
        return Shortage(root.path, root_need + RESERVE, root.free)
    return None
