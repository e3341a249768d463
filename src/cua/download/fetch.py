"""One image pulled by the agent: manifest → platform → blobs into the cache → the engine.

`AgentDownloader.pull` yields `PullProgress` (bytes in the cache against bytes needed, the
bytes of an earlier, interrupted attempt counting as done) and ends with the image in the
engine under its reference. Order of work (the engine's pull of step 5 starts with step 1:
its first requests wait for what the agent learns; the engine's layers and data root are
read from the start too):

1. the manifest (an index resolved to the engine's platform), then the config blob;
2. the layers the engine already holds are skipped: the longest prefix of the config's
   `rootfs.diff_ids` that a local image's layers start with (`manifests.present_prefix`);
3. the disk-space preflight (`preflight.check`): a shortage fails the pull before any
   layer byte moves (the manifest and the small config are read first: their sizes are
   what the preflight needs);
4. the missing blobs, each resumed from its partial bytes with `Range`, retried on a
   broken link with backoff, under the shared bandwidth limit; each is checked against its
   digest once, by its user: the engine as it pulls it from the agent (as from any
   registry: a mismatch fails its pull), the archive member as it sends it
   (`FollowingBlob.chunks`), the agent as it reads the config; a cached blob is checked
   again when it is taken from the cache (a mismatch: discarded, fetched again);
5. the image goes to the engine while its blobs land (`_hand_over`): the engine pulls it
   from the agent's loopback registry (`serve`; `ImageStore.pull_local`), each blob
   fetched when the engine asks for it (`PREFETCH` more fetched ahead, all pulls
   together); blobs it does not ask for (layers it knows by digest) are not fetched. An
   engine that cannot reach the port (another network namespace or host) or asks for a
   layer it holds without knowing its digest (a `docker load`ed one) gets the image as a
   `docker save` archive instead (`ImageStore.load_image`, `PARALLEL_BLOBS` fetched at
   once), without the layers it holds;
6. the cache drops the blobs of this image no other running pull uses, and trims to its
   size cap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from cua.download.cache import BlobCache, feed
from cua.download.engine_registries import EngineRegistries
from cua.download.landing import FollowingBlob, Landing
from cua.download.manifests import (
    Blob,
    ImageManifest,
    ManifestError,
    Platform,
    choose_from_index,
    diff_ids,
    is_index,
    media_type,
    present_prefix,
    read_manifest,
)
from cua.download.preflight import Disk, check, free_bytes
from cua.download.ratelimit import TokenBucket
from cua.download.registry import (
    LinkError,
    RegistryClient,
    RegistryError,
    api_host,
    is_loopback,
)
from cua.download.serve import Blob as ServedBlob
from cua.download.serve import Listen, LocalRegistry, Offer, WholeFile, loopback_socket
from cua.engine.base import EngineError, PullFailedError, PullProgress
from cua.engine.docker_archive import FileMember, Member

log = logging.getLogger(__name__)

PARALLEL_BLOBS = 3
PREFETCH = 2  # blobs fetched before the engine asks for them, all pulls together
LINK_RETRIES = 5
PROGRESS_INTERVAL = 0.5  # s between progress items (feedback throttles to 1/s itself)
SHARED_READ = 1.0  # s the engine's layers, as read, serve the pulls that start after it


class ImageStore(Protocol):
    """What the downloader needs from the engine (`DockerEngine` implements it)."""

    async def engine_platform(self) -> Platform: ...

    async def data_root(self) -> str: ...

    async def engine_registries(self) -> EngineRegistries: ...

    async def layer_chains(self) -> list[list[str]]: ...

    async def load_image(self, config: Member, layers: Sequence[Member | None], tag: str) -> None:
        """Load the image (layers None: the engine holds them) and name it `tag`; the
        members' bytes may still be arriving."""
        ...

    async def pull_local(self, reference: str, tag: str) -> None:
        """Pull `reference` (from the agent's loopback registry) and name it `tag` only."""
        ...


@dataclass(frozen=True, slots=True)
class Source:
    """Where the image is fetched from and what it is called once loaded."""

    registry: str  # host[:port] contacted (a mirror, when one is configured)
    repository: str  # path in that registry
    reference: str  # tag or digest
    name: str  # the reference the image gets on the engine


@dataclass(frozen=True, slots=True)
class _Plan:
    """What goes to the engine, once the pull knows it: the config blob, the blobs to fetch
    and the layers the engine holds (`held`, their digests)."""

    config: Path
    landings: list[Landing]
    held: list[str]


class _Counter:
    def __init__(self, total: int, done: int) -> None:
        self.total = total
        self.done = done


async def _served_pull(
    store: ImageStore, reference: str, name: str, offer: Offer
) -> PullFailedError | None:
    """The engine's pull of `reference` from the agent's loopback registry (None: done).
    Given up as soon as the engine asks, through any pull, for a layer this image holds
    (`Offer.refused_one`): it does not know that layer by its digest, and this pull would
    fail on it too, later (an engine pulls a few layers at a time: a pull waiting for its
    turn would ask for it only then); its archive is sent at once instead."""
    failed: list[PullFailedError] = []

    async def pull() -> None:
        try:
            await store.pull_local(reference, name)
        except PullFailedError as error:
            failed.append(error)
        watching.cancel()

    async def watch() -> None:
        await offer.refused_one.wait()
        pulling.cancel()  # the engine gives its pull up when the request's connection closes
        holds = "the engine holds a layer of it without knowing that layer's digest"
        failed.append(PullFailedError(f"cannot pull image {name}: {holds}"))

    try:
        async with asyncio.TaskGroup() as group:
            pulling = group.create_task(pull())
            watching = group.create_task(watch())
    except* Exception as errors:  # the engine's own (unreachable...): its type, not a group
        raise errors.exceptions[0] from None
    return failed[0] if failed else None


class AgentDownloader:
    """Pulls for one agent: one cache, one bandwidth limit for all pulls together.

    `rate`: bytes/s for all downloads (0: none); `cache_cap`: bytes the cache may keep
    (0: no cap).
    """

    def __init__(
        self,
        cache_dir: Path,
        client: RegistryClient,
        *,
        rate: float = 0,
        cache_cap: int = 0,
        retry_delay: float = 1.0,
        serve: Listen | None = loopback_socket,
    ) -> None:
        self.cache = BlobCache(cache_dir)
        self.local = LocalRegistry(serve) if serve is not None else None
        self._engine_reaches: bool | None = None  # None: not tried yet
        self.served = 0  # images the engine pulled from the loopback registry
        self._prefetch = asyncio.Semaphore(PREFETCH)
        self.client = client
        self.bucket = TokenBucket(rate)
        self.cache_cap = cache_cap
        self.retry_delay = retry_delay
        self._in_use: dict[str, int] = {}  # digest -> running pulls that need it
        self._fetching: dict[str, asyncio.Lock] = {}  # digest -> its one fetch at a time
        self._chains: tuple[float, list[list[str]]] = (-math.inf, [])  # (read began, chains)
        self._chains_lock = asyncio.Lock()

    async def pull(self, store: ImageStore, source: Source) -> AsyncIterator[PullProgress]:
        what = f"cannot pull image {source.name}"
        blobs: list[Blob] = []
        offer = None
        claimed = False
        try:
            self.cache.claim()  # other processes kept out while this process pulls
            claimed = True
            platform = await store.engine_platform()
            mirrors: list[str] = []
            if not is_loopback(api_host(source.registry)):
                registries = await store.engine_registries()
                self.client.trust(registries)
                mirrors = registries.mirrors_of(source.registry)
            if self.local is not None and self._engine_reaches is not False:
                await self.local.start()
                offer = self.local.offer()  # named now, described as the pull learns
            planned: asyncio.Future[_Plan] = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.TaskGroup() as group:
                    # The engine starts its pull at once (it waits for what the agent has
                    # not learnt yet); its layers and data root are read meanwhile too.
                    loading = group.create_task(self._hand_over(store, source, offer, planned))
                    chains = group.create_task(self._layer_chains(store))
                    root = group.create_task(store.data_root())
                    source, manifest, (body, kind) = await self._first_manifest(
                        source, mirrors, platform
                    )
                    if offer is not None:
                        offer.describe(body, kind, "sha256:" + hashlib.sha256(body).hexdigest())
                    blobs = [manifest.config, *manifest.layers]
                    self._hold(blobs)
                    config_landing = Landing(self.cache, manifest.config)
                    config = await self._blob(source, config_landing, None, check=True)
                    ids = diff_ids(config.read_bytes(), len(manifest.layers))
                    present = present_prefix(ids, await chains)
                    needed = list(manifest.layers[present:])
                    if present:
                        log.info(
                            "image %s: %d of %d layers already in the engine, not fetched",
                            source.name,
                            present,
                            len(ids),
                        )
                    self._preflight(await root, needed)
                    counter = _Counter(
                        total=sum(b.size for b in needed),
                        done=sum(min(self._on_disk(b), b.size) for b in needed),
                    )
                    started, resumed = time.monotonic(), counter.done
                    landings = [Landing(self.cache, blob) for blob in needed]
                    held = [blob.digest for blob in manifest.layers[:present]]
                    planned.set_result(_Plan(config, landings, held))
                    if offer is not None:
                        served: list[tuple[str, Callable[[], ServedBlob]]] = [
                            (landing.blob.digest, landing.follow) for landing in landings
                        ]
                        served.append((manifest.config.digest, lambda: WholeFile(config)))
                        offer.fill(served, refused=held)
                    limit = asyncio.Semaphore(PARALLEL_BLOBS)
                    fetches = [
                        group.create_task(self._limited(limit, source, landing, counter))
                        for landing in landings
                    ]
                    while not loading.done():
                        yield PullProgress(source.name, counter.done, counter.total)
                        await asyncio.wait([loading], timeout=PROGRESS_INTERVAL)
                    for landing, fetch in zip(landings, fetches, strict=True):
                        if not landing.wanted.is_set():  # the engine knew that blob
                            fetch.cancel()
                self._log_done(source, counter, started, resumed)
            finally:
                if offer is not None and self.local is not None:
                    self.local.withdraw(offer)
                self._release(blobs)
            self._tidy(blobs)
        except* EngineError as group:  # the engine's own (a PullFailedError, unreachable)
            raise group.exceptions[0] from None
        except* (RegistryError, ManifestError, OSError, ValueError) as group:
            error = group.exceptions[0]
            raise PullFailedError(f"{what}: {error}") from None
        finally:
            if claimed:
                self.cache.release()
        yield PullProgress(source.name, counter.total, counter.total, complete=True)

    async def close(self) -> None:
        await self.client.close()
        if self.local is not None:
            await self.local.close()

    async def _layer_chains(self, store: ImageStore) -> list[list[str]]:
        """The engine's layers, one read for the pulls that start together (the images of
        one update): a read that began at most `SHARED_READ` s ago is taken again (the
        engine's calls slow the start of its own pulls)."""
        async with self._chains_lock:
            if time.monotonic() - self._chains[0] > SHARED_READ:
                began = time.monotonic()
                self._chains = (began, await store.layer_chains())
            return self._chains[1]

    # --- steps ---------------------------------------------------------------------------

    async def _first_manifest(
        self, source: Source, mirrors: Sequence[str], platform: Platform
    ) -> tuple[Source, ImageManifest, tuple[bytes, str]]:
        """The manifest from the first of `mirrors` that gives it, else from the source's
        registry (the engine's mirrors of Docker Hub, tried as the engine tries them): the
        source the pull then fetches its blobs from, the manifest, its bytes and type."""
        for mirror in mirrors:
            tried = replace(source, registry=mirror)
            try:
                return tried, *await self._manifest(tried, platform)
            except (RegistryError, ManifestError) as error:
                log.warning(
                    "image %s: mirror %s failed (%s); trying the next", source.name, mirror, error
                )
        return source, *await self._manifest(source, platform)

    async def _manifest(
        self, source: Source, platform: Platform
    ) -> tuple[ImageManifest, tuple[bytes, str]]:
        body, header = await self.client.manifest(
            source.registry, source.repository, source.reference
        )
        kind = media_type(body, header)
        if is_index(kind):
            digest = choose_from_index(body, platform)
            body, header = await self.client.manifest(source.registry, source.repository, digest)
            if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                raise ManifestError(f"manifest {digest} does not match its digest")
            kind = media_type(body, header)
        return read_manifest(body, kind), (body, kind)

    async def _hand_over(
        self,
        store: ImageStore,
        source: Source,
        offer: Offer | None,
        planned: asyncio.Future[_Plan],
    ) -> None:
        """The image to the engine as its blobs land: pulled from the agent's loopback
        registry (`offer`, described and filled as the pull learns the image) when the
        engine reaches it, each blob fetched when the engine asks for it; else loaded as an
        archive once the pull knows what to load (`planned`)."""

        async def load() -> None:
            plan = await planned
            for landing in plan.landings:
                landing.wanted.set()
            members: list[Member | None] = [None] * len(plan.held)
            members += [FollowingBlob(landing) for landing in plan.landings]
            await store.load_image(FileMember(plan.config), members, source.name)

        local = self.local
        if local is None or offer is None:
            await load()
            return

        def holds_unknown() -> bool:
            """The image has layers the engine holds without knowing their digest."""
            return planned.done() and not local.unknown_to_engine.isdisjoint(planned.result().held)

        if local.unknown_to_engine:  # seen before: the held layers decide the way
            await asyncio.wait([planned])
        error: PullFailedError | None = None
        if not holds_unknown():
            reference = f"{local.address}/{offer.name}:{source.reference}"
            error = await _served_pull(store, reference, source.name, offer)
            if error is None:
                self._engine_reaches = True
                self.served += 1
                return
        if error is None or holds_unknown():
            # It asked for such a layer (through this pull or another that needs it), or
            # did for another image before.
            self._engine_reaches = True
            log.info(
                "image %s: the engine holds a layer of it without knowing that layer's digest "
                "(a loaded one): loaded as an archive without that layer",
                source.name,
            )
            await load()
            return
        if offer.touched or self._engine_reaches:
            raise error
        self._engine_reaches = False
        log.info(
            "the engine does not reach the agent's registry on %s (%s): images are "
            "loaded as archives",
            local.address,
            error,
        )
        await load()

    def _preflight(self, root_path: str, needed: Sequence[Blob]) -> None:
        """`root_path`: the engine's data root (`ImageStore.data_root`)."""
        to_fetch = sum(max(0, b.size - self._on_disk(b)) for b in needed)
        cache = free_bytes(str(self.cache.root))
        if cache is None:
            raise OSError(f"cache directory {self.cache.root} is not readable")
        root: Disk | None = free_bytes(root_path) if root_path else None
        if root is None:
            log.info(
                "engine data root %r is not on this host: its free space is not checked", root_path
            )
        shortage = check(to_fetch, sum(b.size for b in needed), cache, root)
        if shortage is not None:
            raise OSError(str(shortage))

    def _on_disk(self, blob: Blob) -> int:
        if self.cache.path(blob.digest).exists():
            return blob.size
        return self.cache.partial_size(blob.digest)

    async def _limited(
        self, limit: asyncio.Semaphore, source: Source, landing: Landing, counter: _Counter
    ) -> Path:
        """Fetch the blob once the engine asks for it (at most `limit` of a pull at once), or
        before, in a free prefetch slot (`PREFETCH` for all pulls)."""
        wanted = asyncio.ensure_future(landing.wanted.wait())
        slot = asyncio.ensure_future(self._prefetch.acquire())
        try:
            await asyncio.wait([wanted, slot], return_when=asyncio.FIRST_COMPLETED)
        finally:
            wanted.cancel()
            slot.cancel()  # one already done keeps its slot
        if slot.done() and not slot.cancelled():
            try:
                return await self._blob(source, landing, counter)
            finally:
                self._prefetch.release()
        async with limit:
            return await self._blob(source, landing, counter)

    async def _blob(
        self, source: Source, landing: Landing, counter: _Counter | None, *, check: bool = False
    ) -> Path:
        """The blob in the cache: the cached one (checked against its digest), else fetched
        (resumed). Fetched bytes are checked by whoever uses them (`FollowingBlob`), or
        here when `check` (a blob the agent reads itself: the config). Pulls that need the
        same blob (a shared base layer) fetch it once, one after the other."""
        blob = landing.blob
        async with self._fetching.setdefault(blob.digest, asyncio.Lock()):
            path = await self._blob_locked(source, landing, counter, check)
        landing.complete = True
        landing.changed.set()
        return path

    async def _blob_locked(
        self, source: Source, landing: Landing, counter: _Counter | None, check: bool
    ) -> Path:
        blob = landing.blob
        cached = self.cache.path(blob.digest).exists()
        path = await asyncio.to_thread(self.cache.verified, blob.digest) if cached else None
        if path is not None:
            return path
        if cached and counter is not None:  # a discarded entry: its bytes are to fetch again
            counter.done = max(0, counter.done - blob.size)
        delay = self.retry_delay
        for attempt in range(LINK_RETRIES + 1):
            try:
                hashed = await self._fetch(source, landing, counter, check)
            except LinkError as error:
                if attempt == LINK_RETRIES:
                    raise
                log.warning(
                    "download of %s broke (%s); resuming from byte %d in %.0f s",
                    blob.digest,
                    error,
                    self.cache.partial_size(blob.digest),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if not check:
                return self.cache.complete(blob.digest)
            if self.cache.commit(blob.digest, hashed):
                return self.cache.path(blob.digest)
            landing.restarted()
            if counter is not None:
                counter.done = max(0, counter.done - blob.size)
        raise RegistryError(
            f"blob {blob.digest} does not match its digest after {LINK_RETRIES + 1} tries"
        )

    async def _fetch(
        self, source: Source, landing: Landing, counter: _Counter | None, check: bool
    ) -> str | None:
        """Fetch the rest of the blob into its partial file; when `check`, its digest,
        hashed on the way (None: not hashed, or the partial file was complete already)."""
        blob = landing.blob
        partial = self.cache.partial_path(blob.digest)
        offset = self.cache.partial_size(blob.digest)
        if offset > blob.size:
            partial.unlink()
            offset = 0
        if offset < landing.written:
            landing.restarted()
        landing.written = offset
        landing.changed.set()
        if offset == blob.size and blob.size > 0:
            return None
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        answer = await self.client.get(
            source.registry, source.repository, f"blobs/{blob.digest}", headers
        )
        try:
            if answer.status == 416:  # our bytes are already all of it (or garbage: checked)
                return None
            if answer.status != 206 and offset:
                log.info("registry ignored the range for %s: fetching it from byte 0", blob.digest)
                if counter is not None:
                    counter.done = max(0, counter.done - offset)
                offset = 0
                landing.restarted()
            hasher = hashlib.sha256() if check else None
            if hasher is not None:
                feed(hasher.update, partial, offset)
            # unbuffered: the archive member that follows this blob reads what is written
            with partial.open("ab" if offset else "wb", buffering=0) as file:
                async for chunk in answer.chunks():
                    for portion in self.bucket.portions(chunk):
                        await self.bucket.take(len(portion))
                        file.write(portion)
                        if hasher is not None:
                            hasher.update(portion)
                        offset += len(portion)
                        landing.wrote(len(portion))
                        if counter is not None:
                            counter.done += len(portion)
                    if offset > blob.size:
                        raise RegistryError(f"blob {blob.digest} is larger than its manifest says")
        finally:
            answer.close()
        if offset < blob.size:
            raise LinkError(f"blob {blob.digest} ended at byte {offset} of {blob.size}")
        return None if hasher is None else "sha256:" + hasher.hexdigest()

    def _log_done(self, source: Source, counter: _Counter, started: float, resumed: int) -> None:
        took = time.monotonic() - started
        limit = (
            f"limit {self.bucket.rate / (1 << 20):.1f} MiB/s" if self.bucket.limited else "no limit"
        )
        log.info(
            "image %s fetched by the agent: %d bytes in %.1f s (%d were on disk already), %s",
            source.name,
            counter.total - resumed,
            took,
            resumed,
            limit,
        )

    # --- cache hygiene -------------------------------------------------------------------

    def _hold(self, blobs: Sequence[Blob]) -> None:
        for blob in blobs:
            self._in_use[blob.digest] = self._in_use.get(blob.digest, 0) + 1

    def _release(self, blobs: Sequence[Blob]) -> None:
        for blob in blobs:
            count = self._in_use.get(blob.digest, 0) - 1
            if count <= 0:
                self._in_use.pop(blob.digest, None)
            else:
                self._in_use[blob.digest] = count

    def _tidy(self, blobs: Sequence[Blob]) -> None:
        """After a successful load: this image's blobs are in the engine; drop them unless
        a running pull needs them; then keep the cache under its cap."""
        self.cache.remove(b.digest for b in blobs if b.digest not in self._in_use)
        self.cache.trim(self.cache_cap, keep=self._in_use)
        for digest in [d for d in self._fetching if d not in self._in_use]:
            del self._fetching[digest]  # no running pull needs it: nobody waits on its lock
