"""The content-addressed blob cache under the state directory (`<state_dir>/images-<domain>`).

`blobs/sha256/<hex>` holds complete blobs; `partial/sha256/<hex>` holds the bytes received
so far of a blob being fetched: a download interrupted by a lost link, a registry restart,
an agent SIGKILL or a reboot continues from there. A complete blob is checked against its
digest by whoever uses it first (the engine pulling it from the agent, the archive member
sending it, `commit` for a blob the agent reads itself), and again whenever it is taken
from the cache (`verified`; hashing is far cheaper than fetching): an entry that fails is
discarded, so the blob is fetched again.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20


class CacheError(OSError):
    """The cache directory cannot be written (full disk, permissions)."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(READ_SIZE):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def feed(update: Callable[[bytes], object], path: Path, size: int) -> None:
    """The first `size` bytes of `path` to `update` (a hash of a download resumed there)."""
    if size <= 0:
        return
    with path.open("rb") as file:
        while size > 0 and (chunk := file.read(min(READ_SIZE, size))):
            update(chunk)
            size -= len(chunk)


class BlobCache:
    """One process's cache: `claim` keeps other processes out of it while this one's pulls
    run (their appends to one partial file, or a tidy removing a blob the other is
    sending, would garble both); each domain's agent has its own (`cua.cli`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._partial = root / "partial" / "sha256"
        self._claims = 0  # pulls of this process using the cache now
        self._lock: int | None = None  # the open lock file while claimed

    def claim(self) -> None:
        """One more pull of this process uses the cache (made if missing); CacheError if
        another process uses it (an agent and a tool of one domain, at once)."""
        if self._claims == 0:
            self.ensure()
            lock = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock)
                raise CacheError(
                    f"the download cache {self.root} is in use by another process (an agent "
                    "or a tool of the same domain and state_dir): try again once it is done"
                ) from None
            self._lock = lock
        self._claims += 1

    def release(self) -> None:
        """A pull of this process is done with the cache; the last one lets others in."""
        self._claims -= 1
        if self._claims == 0 and self._lock is not None:
            os.close(self._lock)  # the flock goes with it
            self._lock = None

    def ensure(self) -> None:
        """The cache's directories, made if missing (CacheError naming the way out if they
        cannot be: the tools, run by an operator, may not reach the default state_dir)."""
        try:
            self._blobs.mkdir(parents=True, exist_ok=True)
            self._partial.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(
                f"the download cache {self.root} cannot be made ({error.strerror or error}): "
                'set update_agent.state_dir to a writable directory, or download: "engine" '
                "to have the engine pull"
            ) from None

    def path(self, digest: str) -> Path:
        return self._blobs / digest.removeprefix("sha256:")

    def partial_path(self, digest: str) -> Path:
        return self._partial / digest.removeprefix("sha256:")

    def partial_size(self, digest: str) -> int:
        try:
            return self.partial_path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def verified(self, digest: str) -> Path | None:
        """The complete blob's path if it is there and matches its digest. A blob that does
        not match is discarded (and logged): the caller fetches it again."""
        path = self.path(digest)
        if not path.exists():
            return None
        if file_digest(path) != digest:
            log.warning("cached blob %s does not match its digest; discarded", digest)
            path.unlink(missing_ok=True)
            return None
        return path

    def complete(self, digest: str) -> Path:
        """Move a fully received blob into the cache, unchecked (its user checks it)."""
        path = self.path(digest)
        os.replace(self.partial_path(digest), path)
        return path

    def commit(self, digest: str, hashed: str | None = None) -> bool:
        """Move a fully received blob into the cache if it matches its digest (True); a
        mismatch discards the partial bytes (False). `hashed`: the digest of the bytes as
        they were written (None: read the file to hash it)."""
        partial = self.partial_path(digest)
        if (hashed or file_digest(partial)) != digest:
            log.warning("downloaded blob %s does not match its digest; discarded", digest)
            partial.unlink(missing_ok=True)
            return False
        os.replace(partial, self.path(digest))
        return True

    def digests(self) -> set[str]:
        """Every digest with bytes in the cache (complete or partial)."""
        found: set[str] = set()
        for folder in (self._blobs, self._partial):
            if folder.is_dir():
                found.update("sha256:" + p.name for p in folder.iterdir())
        return found

    def size(self) -> int:
        total = 0
        for folder in (self._blobs, self._partial):
            if folder.is_dir():
                total += sum(p.stat().st_size for p in folder.iterdir())
        return total

    def remove(self, digests: Iterable[str]) -> int:
        """Remove these blobs (complete and partial); returns the bytes freed."""
        freed = 0
        for digest in digests:
            for path in (self.path(digest), self.partial_path(digest)):
                try:
                    freed += path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    pass
        return freed

    def trim(self, cap: int, keep: Iterable[str] = ()) -> int:
        """Remove the oldest blobs not in `keep` until the cache holds at most `cap` bytes
        (`cap <= 0`: no cap). Returns the bytes freed."""
        if cap <= 0:
            return 0
        kept = set(keep)
        total = self.size()
        candidates = []
        for folder in (self._blobs, self._partial):
            if folder.is_dir():
                candidates += [p for p in folder.iterdir() if "sha256:" + p.name not in kept]
        candidates.sort(key=lambda p: p.stat().st_mtime)
        freed = 0
        for path in candidates:
            if total - freed <= cap:
                break
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            freed += size
        return freed
