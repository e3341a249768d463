"""The pure parts of the agent's downloads: manifests, platform choice, present layers, the
token bucket, the disk-space preflight, the blob cache and the load archive."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from cua.download.cache import BlobCache, CacheError
from cua.download.landing import FollowingBlob, Landing
from cua.download.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    Blob,
    ManifestError,
    Platform,
    choose_from_index,
    diff_ids,
    media_type,
    present_prefix,
    read_manifest,
)
from cua.download.preflight import RESERVE, UNPACK_RATIO, Disk, check
from cua.download.ratelimit import TokenBucket
from cua.download.registry import RegistryError, api_host, base_url, is_loopback, parse_challenge
from cua.engine.docker_archive import DockerArchive, FileMember, archive_bytes

pytestmark = pytest.mark.unit

MIB = 1 << 20


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


D1, D2, D3 = (_digest(bytes([i])) for i in range(3))


def _index(*platforms: tuple[str, str, str]) -> bytes:
    entries = [
        {
            "mediaType": DOCKER_MANIFEST,
            "digest": _digest(f"{os}{arch}{variant}".encode()),
            "size": 1,
            "platform": {
                "os": os,
                "architecture": arch,
                **({"variant": variant} if variant else {}),
            },
        }
        for os, arch, variant in platforms
    ]
    return json.dumps({"mediaType": DOCKER_LIST, "manifests": entries}).encode()


def test_the_index_entry_of_the_engine_platform_is_chosen() -> None:
    index = _index(("linux", "amd64", ""), ("linux", "arm", "v7"), ("linux", "arm64", "v8"))
    assert choose_from_index(index, Platform("linux", "arm64")) == _digest(b"linuxarm64v8")
    assert choose_from_index(index, Platform("linux", "arm", "v7")) == _digest(b"linuxarmv7")
    with pytest.raises(ManifestError, match=r"linux/riscv64 \(offered: linux/amd64, linux/arm/v7"):
        choose_from_index(index, Platform("linux", "riscv64"))


def test_media_type_comes_from_the_document_else_the_header() -> None:
    assert media_type(_index(("linux", "amd64", "")), "text/plain") == DOCKER_LIST
    assert media_type(b"{}", f"{OCI_INDEX}; charset=utf-8") == OCI_INDEX


def test_a_manifest_gives_its_config_and_layers_with_sizes() -> None:
    body = json.dumps(
        {
            "config": {"digest": D1, "size": 10},
            "layers": [{"digest": D2, "size": 100}, {"digest": D3, "size": 1000}],
        }
    ).encode()
    manifest = read_manifest(body, DOCKER_MANIFEST)
    assert [b.digest for b in manifest.layers] == [D2, D3]
    assert manifest.download_size == 1110


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (b"{}", "application/vnd.docker.distribution.manifest.v1+json", "unsupported manifest"),
        (b"[]", DOCKER_MANIFEST, "not a JSON object"),
        (b'{"config": {"digest": "md5:x", "size": 1}, "layers": []}', DOCKER_MANIFEST, "md5:x"),
        (
            b'{"config": {"digest": "%s", "size": -1}, "layers": []}' % D1.encode(),
            DOCKER_MANIFEST,
            "bad size",
        ),
    ],
)
def test_unusable_manifests_are_named(body: bytes, kind: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        read_manifest(body, kind)


def test_diff_ids_must_match_the_layers() -> None:
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [D1, D2]}}).encode()
    assert diff_ids(config, 2) == (D1, D2)
    with pytest.raises(ManifestError, match="names 2 layers, the manifest 3"):
        diff_ids(config, 3)


def test_only_a_common_prefix_of_layers_counts_as_present() -> None:
    assert present_prefix([D1, D2, D3], [[D1, D2], [D1]]) == 2
    assert present_prefix([D1, D2, D3], [[D2, D3]]) == 0  # same layers on another base
    assert present_prefix([D1], [[D1, D2, D3]]) == 1
    assert present_prefix([D1, D2], []) == 0


def test_registry_addresses_and_challenges() -> None:
    assert is_loopback("127.0.0.1:5000")
    assert is_loopback("localhost")
    assert is_loopback("[::1]:5000")
    assert not is_loopback("ghcr.io")
    assert not is_loopback("10.0.0.1:5000")
    assert base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert base_url("docker.io") == "https://registry-1.docker.io"
    assert api_host("ghcr.io") == "ghcr.io"
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull",
    }


def test_the_token_bucket_spreads_bytes_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(1000, burst=100, clock=lambda: now[0])
    assert bucket.delay_for(100) == 0.0  # the burst
    assert bucket.delay_for(500) == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.delay_for(1000) == pytest.approx(1.0)  # callers queue behind each other
    assert TokenBucket(0).delay_for(10**9) == 0.0


def test_a_large_read_passes_the_bucket_a_burst_at_a_time() -> None:
    data = memoryview(bytes(range(256)) * 1024)  # 256 KiB read at once
    limited = list(TokenBucket(1 << 20).portions(data))  # burst: 104,857 bytes
    assert [len(p) for p in limited] == [104857, 104857, 52430]
    assert b"".join(limited) == data
    assert [len(p) for p in TokenBucket(1000).portions(data)] == [16384] * 16  # not tinier
    assert list(TokenBucket(0).portions(data)) == [data]  # no limit: whole


def test_preflight_separate_filesystems() -> None:
    cache = Disk("/cache", free=100 * MIB, device=1)
    root = Disk("/root", free=100 * MIB, device=2)
    assert check(50 * MIB, 10 * MIB, cache, root) is None
    shortage = check(90 * MIB, 10 * MIB, cache, root)
    assert shortage is not None
    assert shortage.path == "/cache"
    assert shortage.needed == 90 * MIB + RESERVE
    shortage = check(10 * MIB, 30 * MIB, cache, root)
    assert shortage is not None
    assert shortage.path == "/root"
    assert str(shortage) == (
        f"not enough disk space in /root: {(30 * (1 + UNPACK_RATIO) * MIB + RESERVE) / MIB:.1f} MiB"
        f" needed (with {RESERVE / MIB:.1f} MiB kept free), 100.0 MiB free"
    )


def test_preflight_one_filesystem_adds_the_needs_and_a_remote_root_is_not_checked() -> None:
    cache = Disk("/var", free=100 * MIB, device=1)
    assert check(20 * MIB, 20 * MIB, cache, Disk("/var/lib/docker", 100 * MIB, 1)) is not None
    assert check(20 * MIB, 20 * MIB, cache, Disk("/other", 100 * MIB, 2)) is None
    assert check(20 * MIB, 20 * MIB, cache, None) is None


def test_the_cache_verifies_commits_and_discards(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    cache.ensure()
    data = b"layer bytes"
    digest = _digest(data)
    cache.partial_path(digest).write_bytes(data[:5])
    assert cache.partial_size(digest) == 5
    with cache.partial_path(digest).open("ab") as file:
        file.write(data[5:])
    assert cache.commit(digest)
    assert cache.verified(digest) == cache.path(digest)
    cache.path(digest).write_bytes(b"rotten")
    assert cache.verified(digest) is None
    assert not cache.path(digest).exists()
    cache.partial_path(digest).write_bytes(b"wrong")
    assert not cache.commit(digest)
    assert cache.partial_size(digest) == 0


def test_a_cache_that_cannot_be_made_says_where_and_the_way_out(tmp_path: Path) -> None:
    # `cua apply` by an operator who cannot write the default state_dir (root is not
    # refused by permissions: a file in the way is refused to anyone)
    (tmp_path / "state").write_text("not a directory")
    cache = BlobCache(tmp_path / "state" / "images")
    with pytest.raises(CacheError) as raised:
        cache.ensure()
    assert str(raised.value) == (
        f"the download cache {tmp_path}/state/images cannot be made (Not a directory): "
        'set update_agent.state_dir to a writable directory, or download: "engine" to have '
        "the engine pull"
    )


def test_a_cache_is_one_processs_while_its_pulls_run(tmp_path: Path) -> None:
    # Two BlobCache objects on one directory hold two open lock files, as two processes
    # would (flock is per open file): the second is kept out until the first is done.
    agent, tool = BlobCache(tmp_path / "images-a"), BlobCache(tmp_path / "images-a")
    agent.claim()
    agent.claim()  # a second pull of the same process
    with pytest.raises(CacheError) as raised:
        tool.claim()
    assert str(raised.value) == (
        f"the download cache {tmp_path}/images-a is in use by another process (an agent or a "
        "tool of the same domain and state_dir): try again once it is done"
    )
    agent.release()
    with pytest.raises(CacheError):
        tool.claim()  # one pull still runs
    agent.release()
    tool.claim()  # the agent's pulls are done
    BlobCache(tmp_path / "images-b").claim()  # another domain's cache: its own
    with pytest.raises(CacheError):
        agent.claim()
    tool.release()


async def test_a_pull_into_a_cache_in_use_fails_naming_it_before_anything_else(
    tmp_path: Path,
) -> None:
    from cua.download.fetch import AgentDownloader, Source
    from cua.download.registry import RegistryClient
    from cua.engine.base import PullFailedError

    class NoStore:  # the pull must not get as far as the engine
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the engine was asked for {name}")

    other = BlobCache(tmp_path / "images-a")
    other.claim()
    downloader = AgentDownloader(tmp_path / "images-a", RegistryClient(), serve=None)
    source = Source("registry.test", "app", "1", "registry.test/app:1")
    with pytest.raises(PullFailedError) as raised:
        async for _ in downloader.pull(NoStore(), source):  # type: ignore[arg-type]
            pass
    assert str(raised.value).startswith(
        f"cannot pull image registry.test/app:1: the download cache {tmp_path}/images-a is in "
        "use by another process"
    )
    other.release()
    await downloader.close()


def test_the_cache_is_trimmed_to_its_cap_oldest_first_keeping_blobs_in_use(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    cache.ensure()
    digests = []
    for age, byte in enumerate(b"abc"):
        data = bytes([byte]) * 100
        digest = _digest(data)
        cache.path(digest).write_bytes(data)
        os.utime(cache.path(digest), (age, age))
        digests.append(digest)
    assert cache.size() == 300
    assert cache.trim(150, keep={digests[0]}) == 200  # the oldest is in use: kept
    assert cache.digests() == {digests[0]}
    assert cache.trim(0) == 0


async def test_the_load_archive_is_a_docker_save_tar_without_the_held_layers(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.write_bytes(b'{"rootfs": {}}')
    layer = tmp_path / "layer"
    layer.write_bytes(b"z" * 1000)
    archive = DockerArchive(FileMember(config), [None, FileMember(layer)], "reg:5000/app:1")
    data = await archive_bytes(archive)
    assert len(data) == archive.length
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["manifest.json", "config.json", "layer1.tar"]
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert tar.extractfile("layer1.tar").read() == b"z" * 1000  # type: ignore[union-attr]
    assert manifest == [
        {
            "Config": "config.json",
            "RepoTags": ["reg:5000/app:1"],
            "Layers": ["layer0.tar", "layer1.tar"],
        }
    ]


async def test_a_following_member_holds_back_the_last_byte_until_the_blob_is_complete(
    tmp_path: Path,
) -> None:

    cache = BlobCache(tmp_path)
    cache.ensure()
    data = b"0123456789"
    blob = Blob(_digest(data), len(data))
    landing = Landing(cache, blob)
    received: list[bytes] = []

    async def follow() -> None:
        async for chunk in FollowingBlob(landing).chunks():
            received.append(chunk)

    reader = asyncio.create_task(follow())
    cache.partial_path(blob.digest).write_bytes(data[:4])
    landing.wrote(4)
    await asyncio.sleep(0.01)
    assert b"".join(received) == data[:4]
    with cache.partial_path(blob.digest).open("ab") as file:
        file.write(data[4:])
    landing.wrote(6)
    await asyncio.sleep(0.01)
    assert b"".join(received) == data[:9]  # all written, not yet in the cache: the last waits
    cache.complete(blob.digest)
    landing.complete = True
    landing.changed.set()
    await asyncio.wait_for(reader, 1)
    assert b"".join(received) == data


async def test_an_archive_member_does_not_send_the_last_byte_of_a_blob_not_matching_its_digest(
    tmp_path: Path,
) -> None:
    """The engine's load does not check a layer's digest: the member does, and the blob
    leaves the cache (the next pull fetches it again)."""
    cache = BlobCache(tmp_path)
    cache.ensure()
    blob = Blob(_digest(b"0123456789"), 10)
    cache.partial_path(blob.digest).write_bytes(b"0123456780")  # one byte wrong
    path = cache.complete(blob.digest)
    landing = Landing(cache, blob)
    landing.wrote(10)
    landing.complete = True
    received = bytearray()

    async def follow() -> None:
        async for chunk in FollowingBlob(landing).chunks():
            received.extend(chunk)

    with pytest.raises(RegistryError, match="does not match its digest: discarded"):
        await follow()
    assert len(received) < 10
    assert not path.exists()


async def test_a_following_member_fails_when_its_blob_starts_over(tmp_path: Path) -> None:

    cache = BlobCache(tmp_path)
    cache.ensure()
    blob = Blob(_digest(b"abcdef"), 6)
    landing = Landing(cache, blob)
    cache.partial_path(blob.digest).write_bytes(b"abc")
    landing.wrote(3)
    chunks = FollowingBlob(landing).chunks()
    assert await anext(chunks) == b"abc"
    landing.restarted()
    with pytest.raises(RegistryError, match="started over"):
        await anext(chunks)
