"""Downloads by the agent itself (README, Downloads): on the real dockerd and registry, with
`cua_dev.proxy` as a registry mirror in front of the registry counting the bytes a device
would pay for, cutting the link and throttling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cua.download.fetch import AgentDownloader
from cua.download.link import SocketConnector
from cua.download.proxy import Proxies, Proxy
from cua.download.registry import RegistryClient
from cua.download.serve import Listen, loopback_socket
from cua.engine import docker
from cua.engine.base import EngineUnavailableError, PullFailedError
from cua.engine.docker import DockerEngine
from cua_dev.connect_proxy import ConnectProxy, Route, TlsFront
from cua_dev.images import BuiltImage, ImageFactory
from cua_dev.proxy import RegistryProxy
from cua_dev.stack import HUB_MIRRORS, INSECURE_REGISTRY, LocalStack
from cua_dev.unixhttp import RawEngine
from tests.builders import component, standalone_statuses

pytestmark = pytest.mark.integration

MIB = 1 << 20


@pytest.fixture
def proxy(clean_engine: LocalStack) -> Iterator[RegistryProxy]:
    with RegistryProxy(clean_engine.registry_connect) as registry_proxy:
        yield registry_proxy


@pytest.fixture
def raw(docker_host: str) -> RawEngine:
    return RawEngine(docker_host)


def _engine(
    stack: LocalStack,
    proxy: RegistryProxy,
    cache: Path,
    rate: float = 0,
    serve: Listen | None = None,
) -> DockerEngine:
    """The agent's downloads; `serve`: where its loopback registry listens (None: none, the
    engine loads archives)."""
    downloader = AgentDownloader(cache, RegistryClient(), rate=rate, retry_delay=0.2, serve=serve)
    return DockerEngine(
        stack.docker_host, mirrors={stack.registry: proxy.address}, downloader=downloader
    )


@contextlib.asynccontextmanager
async def _fetching_with(
    stack: LocalStack, client: RegistryClient, tmp_path: Path, raw: RawEngine, image: str
) -> AsyncIterator[DockerEngine]:
    """The agent's downloads through `client` (no mirror of the agent's), its loopback
    registry where dockerd reaches it; closed, and `image` removed, at the end."""
    downloader = AgentDownloader(tmp_path / "images", client, serve=in_engine_netns(stack))
    engine = DockerEngine(stack.docker_host, downloader=downloader)
    try:
        yield engine
    finally:
        await engine.close()
        raw.forget(image)


def _to_the_registry(stack: LocalStack) -> tuple[list[tuple[str, int]], SocketConnector]:
    """A connector reaching the stack's registry under any name, and the (host, port) it
    was asked for, in order."""
    reached: list[tuple[str, int]] = []

    async def to_registry(host: str, port: int) -> socket.socket:
        reached.append((host, port))
        return await stack.registry_socket()

    return reached, to_registry


def _to_insecure_registry(stack: LocalStack) -> Route:
    """A proxy's tunnels to `INSECURE_REGISTRY` (only), reaching the stack's registry."""

    async def route(host: str, port: int) -> socket.socket:
        assert f"{host}:{port}" == INSECURE_REGISTRY
        return await stack.registry_socket()

    return route


def in_engine_netns(stack: LocalStack) -> Listen:
    """A loopback socket where dockerd's loopback is (the stack's network namespace)."""

    def listen() -> socket.socket:
        sock = stack.netns.new_socket()
        sock.bind(("127.0.0.1", 0))
        return sock

    return listen


@pytest.fixture(params=["served", "archive"])
async def agent_engine(
    request: pytest.FixtureRequest, clean_engine: LocalStack, proxy: RegistryProxy, tmp_path: Path
) -> AsyncIterator[DockerEngine]:
    """Both ways to the engine: it pulls from the agent's loopback registry, or loads an
    archive."""
    serve = in_engine_netns(clean_engine) if request.param == "served" else None
    engine = _engine(clean_engine, proxy, tmp_path / "images", serve=serve)
    yield engine
    await engine.close()


def _fresh(
    factory: ImageFactory, raw: RawEngine, name: str, size_mb: float, base: str = ""
) -> tuple[str, BuiltImage]:
    """Image `download/<name>:1` pushed to the registry and absent from the engine."""
    image = factory(f"download/{name}", "1", marker=name, size_mb=size_mb, base=base)
    raw.forget(image)
    return image, factory.images[image]


def _download_size(built: BuiltImage) -> int:
    """Bytes of all the image's blobs (what a pull with no layer present fetches)."""
    return len(built.config) + sum(len(layer.gz) for layer in built.layers)


async def _pull(engine: DockerEngine, image: str) -> list[tuple[int, int]]:
    return [(p.done, p.total) async for p in engine.pull_image(image)]


async def test_the_agent_fetches_verifies_and_the_engine_loads_under_the_reference(
    request: pytest.FixtureRequest,
    agent_engine: DockerEngine,
    *,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    image, built = _fresh(image_factory, raw, "basic", 3.0)
    progress = await _pull(agent_engine, image)
    loaded = raw.image(image)
    assert loaded["Id"] == built.image_id
    assert loaded["RepoTags"] == [image]  # no loopback name left
    assert not any(d.startswith("127.0.0.1:") for d in loaded["RepoDigests"] or [])
    assert agent_engine.downloader is not None
    assert agent_engine.downloader.served == (
        request.node.callspec.params["agent_engine"] == "served"
    )
    assert progress[-1][0] == progress[-1][1] > 0
    assert all(done <= total for done, total in progress)
    # the blobs went to the engine: the cache keeps none of them
    assert not any((tmp_path / "images" / "blobs" / "sha256").iterdir())
    assert proxy.down_bytes >= len(built.layers[1].gz)


async def test_layers_the_engine_holds_are_not_fetched(
    agent_engine: DockerEngine,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
) -> None:
    image_factory("download/base", "1", load=True, marker="holds-base")
    image, built = _fresh(image_factory, raw, "top", 3.0)
    await _pull(agent_engine, image)
    base, top = built.layers
    assert raw.image(image)["Id"] == built.image_id
    assert len(top.gz) <= proxy.down_bytes < len(top.gz) + len(base.gz) // 2


async def test_pulls_at_once_of_images_on_a_loaded_base_all_end_loaded_without_it(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    """Five at once. The engine shares one download of a layer among its pulls: its request
    for the loaded base (refused) fails every pull from the agent's registry that needs it,
    not only the one it came through; each is loaded as an archive, and a later pull on
    that base goes straight to the archive."""
    base = "loaded-only"  # a base layer the engine knows from no pull
    image_factory("download/loaded-base", "1", load=True, marker="loaded-base", base=base)
    fresh = [_fresh(image_factory, raw, f"on-loaded-{i}", 0.0, base) for i in range(6)]
    engine = _engine(clean_engine, proxy, tmp_path / "images", serve=in_engine_netns(clean_engine))
    try:
        await asyncio.gather(*(_pull(engine, image) for image, _ in fresh[:5]))
        downloader = engine.downloader
        assert downloader is not None
        assert downloader.local is not None
        assert downloader.local.unknown_to_engine == {fresh[0][1].layers[0].digest}
        await _pull(engine, fresh[5][0])
        assert downloader.served == 0
    finally:
        await engine.close()
    for image, built in fresh:
        assert raw.image(image)["Id"] == built.image_id


class PlayedPulls(DockerEngine):
    """The real engine with the agent's downloads, whose pulls from the agent's registry
    (`pull_local`) a subclass plays."""

    def __init__(self, stack: LocalStack, proxy: RegistryProxy, cache: Path):
        downloader = AgentDownloader(cache, RegistryClient(), serve=loopback_socket)
        super().__init__(
            stack.docker_host, mirrors={stack.registry: proxy.address}, downloader=downloader
        )


class EngineAskingOnce(PlayedPulls):
    """The first pull asks for `asks_for` (as dockerd does for a layer it holds without
    knowing its digest) and fails on the 404; the others wait for their turn (dockerd pulls
    a few layers at a time), which never comes here: only the agent giving them up ends
    them."""

    def __init__(self, stack: LocalStack, proxy: RegistryProxy, cache: Path, asks_for: str):
        super().__init__(stack, proxy, cache)
        self.asks_for = asks_for
        self.pulls = 0
        self.given_up = 0

    async def pull_local(self, reference: str, tag: str) -> None:
        self.pulls += 1
        if self.pulls > 1:
            try:
                await asyncio.Event().wait()
            finally:
                self.given_up += 1
        address, _, rest = reference.partition("/")
        host, _, port = address.partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        name = rest.rpartition(":")[0]
        writer.write(f"GET /v2/{name}/blobs/{self.asks_for} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = (await reader.readline()).decode().split()[1]
        writer.close()
        raise PullFailedError(f"cannot pull image {tag}: layer answered {status}")


async def test_a_refused_layer_gives_up_at_once_every_pull_from_the_agent_that_holds_it(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    """A pull still waiting for its turn would ask for the loaded base only later, and fail
    only then: as soon as any pull is refused that layer, the agent gives up every pull
    from its registry that holds it and sends each image as an archive."""
    base = "loaded-wait"
    image_factory("download/loaded-wait", "1", load=True, marker="loaded-wait", base=base)
    fresh = [_fresh(image_factory, raw, f"on-wait-{i}", 0.0, base) for i in range(3)]
    engine = EngineAskingOnce(
        clean_engine, proxy, tmp_path / "images", fresh[0][1].layers[0].digest
    )
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(_pull(engine, image) for image, _ in fresh))
        assert (engine.pulls, engine.given_up) == (3, 2)
        assert engine.downloader is not None
        assert engine.downloader.served == 0
    finally:
        await engine.close()
    for image, built in fresh:
        assert raw.image(image)["Id"] == built.image_id


class EngineGoneDuringPull(PlayedPulls):
    """The engine gone (as when dockerd stops) when its pull from the agent starts."""

    async def pull_local(self, reference: str, tag: str) -> None:
        raise EngineUnavailableError("cannot reach the engine: connection refused")


async def test_the_engine_gone_during_a_pull_from_the_agent_is_its_own_error(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    """Not a group of errors: the update's handling of an unreachable engine needs the type."""
    image, _ = _fresh(image_factory, raw, "engine-gone", 0.0)
    engine = EngineGoneDuringPull(clean_engine, proxy, tmp_path / "images")
    try:
        with pytest.raises(EngineUnavailableError, match="connection refused"):
            await _pull(engine, image)
    finally:
        await engine.close()


async def test_layers_the_engine_pulled_itself_are_not_asked_for(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    """The engine pulling from the agent's registry skips the layers it knows by digest (it
    pulled them before): the agent fetches only the rest. One it holds without knowing the
    digest (a `docker load`ed one) makes the agent load an archive without it (above)."""
    raw.pull(image_factory("download/pulled-base", "1", marker="pulled-base"))
    image, built = _fresh(image_factory, raw, "on-pulled-base", 3.0)
    engine = _engine(clean_engine, proxy, tmp_path / "images", serve=in_engine_netns(clean_engine))
    try:
        await _pull(engine, image)
        assert engine.downloader is not None
        assert engine.downloader.served == 1
    finally:
        await engine.close()
    base, top = built.layers
    assert raw.image(image)["Id"] == built.image_id
    assert len(top.gz) <= proxy.down_bytes < len(top.gz) + len(base.gz) // 2


async def test_pulls_that_share_blobs_fetch_each_once(
    agent_engine: DockerEngine,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
) -> None:
    image, built = _fresh(image_factory, raw, "shared", 5.0)
    await asyncio.gather(_pull(agent_engine, image), _pull(agent_engine, image))
    assert raw.image(image)["Id"] == built.image_id
    assert len(built.layers[1].gz) <= proxy.down_bytes < 1.2 * _download_size(built)


async def test_a_corrupted_cached_blob_is_detected_and_fetched_again(
    agent_engine: DockerEngine,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    image, built = _fresh(image_factory, raw, "corrupt", 4.0)
    top = built.layers[1]
    blobs = tmp_path / "images" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / top.digest.removeprefix("sha256:")).write_bytes(b"x" * len(top.gz))
    await _pull(agent_engine, image)
    assert raw.image(image)["Id"] == built.image_id
    assert proxy.down_bytes >= len(top.gz)


async def test_an_image_the_registry_does_not_have_fails_with_the_registrys_answer(
    agent_engine: DockerEngine,
    clean_engine: LocalStack,
    raw: RawEngine,
) -> None:
    """Served: the engine's pull, started with the agent's, is stopped (it waited for the
    manifest); the failure is the registry's answer to the agent."""
    image = f"{clean_engine.registry}/download/never-pushed:1"
    with pytest.raises(PullFailedError, match=r"never-pushed/manifests: 404 .*unknown"):
        await _pull(agent_engine, image)
    assert raw.status("GET", f"/images/{image}/json") == 404
    assert agent_engine.downloader is not None
    assert agent_engine.downloader.served == 0


async def test_bytes_garbled_on_the_way_fail_the_pull_and_the_next_pull_fetches_them_again(
    request: pytest.FixtureRequest,
    agent_engine: DockerEngine,
    *,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
) -> None:
    """Checked by their user: the engine pulling from the agent (as from any registry), or
    the archive member (the engine's load checks only unpacked layers)."""
    image, built = _fresh(image_factory, raw, "garbled", 3.0)
    proxy.corrupt_at(len(built.layers[1].gz) // 2)  # past the answers' heads: in a layer
    served = request.node.callspec.params["agent_engine"] == "served"
    # the engine's own words when it pulls; the agent's when it loads
    checked = "layer verification failed" if served else "does not match its digest"
    with pytest.raises(PullFailedError, match=checked):
        await _pull(agent_engine, image)
    assert raw.status("GET", f"/images/{image}/json") == 404
    proxy.reset()
    await _pull(agent_engine, image)
    assert raw.image(image)["Id"] == built.image_id
    assert proxy.down_bytes >= len(built.layers[1].gz) // 2  # the garbled blob came again


@pytest.fixture
def small_cache(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (mounted for the test, unmounted after)."""
    cache = tmp_path / "small"
    cache.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(cache)]
    if subprocess.run(mount, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield cache
    finally:
        subprocess.run(["umount", str(cache)], check=True)


@pytest.mark.parametrize("way", ["served", "archive"])
async def test_a_shortage_of_disk_space_fails_before_any_layer_byte(
    way: str,
    *,
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    small_cache: Path,
) -> None:
    """Also when the engine's pull from the agent's registry started with the agent's (it
    waits for the manifest and the blobs): it is stopped, the image not there."""
    image, _built = _fresh(image_factory, raw, f"too-big-{way}", 20.0)
    serve = in_engine_netns(clean_engine) if way == "served" else None
    engine = _engine(clean_engine, proxy, small_cache / "images", serve=serve)
    try:
        with pytest.raises(PullFailedError, match="not enough disk space") as failure:
            await _pull(engine, image)
    finally:
        await engine.close()
    assert f"{small_cache}/images" in str(failure.value)
    assert "MiB needed" in str(failure.value)
    assert "MiB free" in str(failure.value)
    assert proxy.down_bytes < 64 * 1024  # the manifest and the config, no layer
    assert raw.status("GET", f"/images/{image}/json") == 404


async def test_a_download_cut_half_way_then_killed_resumes_from_the_bytes_on_disk(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    """`cua run` with `download: "agent"`: the link is lost at half the image, the agent is
    SIGKILLed and started again; recovery answers the interrupted activity INCOMPLETE, and
    the desired state sent again completes, its pull continuing from the partial bytes the
    killed agent left in the cache."""
    from tests.integration.test_agent import (
        AgentProcess,
        agent_for,
        desired_state,
        probe_for,
        statuses,
    )

    image_factory("download/resume", "1", marker="resume", size_mb=20.0)
    built = image_factory.images[f"{clean_engine.registry}/download/resume:1"]
    raw.forget("ghcr.io/download/resume:1")
    size = _download_size(built)
    settings = {"download": "agent", "registry_mirrors": {"ghcr.io": proxy.address}}
    app = desired_state("dl-resume", component("app", "1", image="ghcr.io/download/resume:1"))
    partial = tmp_path / "state" / "images-dl-resume" / "partial" / "sha256"
    proxy.cut_at(size // 2)
    config = {
        "update_agent": {
            "domain": "dl-resume",
            "engine": clean_engine.docker_host,
            "activation_window": "500ms",
            "state_dir": str(tmp_path / "state"),
            **settings,
        },
        "connection": {"broker_url": clean_engine.broker_url},
    }
    async with probe_for(clean_engine, "dl-resume") as probe:
        first = AgentProcess(tmp_path / "killed", config)
        try:
            await probe.state("initial")
            probe.desired("d1", app)
            assert await asyncio.to_thread(proxy.wait_held, 60), "never reached half way"
            await asyncio.sleep(0.5)  # the agent retries into the held link
        finally:
            os.kill(first.process.pid, signal.SIGKILL)  # the agent itself, by its PID
            first.process.wait(10)
            assert first.stop() == -signal.SIGKILL, first.log()[-3000:]
        assert sum(p.stat().st_size for p in partial.iterdir()) >= size // 4
        assert raw.status("GET", "/containers/app/json") == 404
        proxy.release()
        with agent_for(clean_engine, tmp_path, "dl-resume", **settings):
            await probe.until("d1", {"INCOMPLETE"}, wait=60)
            probe.desired("d2", app)
            messages = await probe.until("d2", {"COMPLETED", "INCOMPLETE"}, wait=120)
    assert statuses(messages) == standalone_statuses()
    assert raw.image("ghcr.io/download/resume:1")["Id"] == built.image_id
    assert raw.container("app")["State"]["Running"]
    assert proxy.down_bytes <= size * 1.25, (proxy.down_bytes, size)


async def test_a_link_lost_half_way_and_back_resumes_within_the_same_pull(
    agent_engine: DockerEngine,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
) -> None:
    image, built = _fresh(image_factory, raw, "relink", 10.0)
    size = _download_size(built)
    proxy.cut_at(size // 2)

    async def link_back() -> None:
        await asyncio.to_thread(proxy.wait_held, 30)
        await asyncio.sleep(0.5)
        proxy.release()

    await asyncio.gather(_pull(agent_engine, image), link_back())
    assert raw.image(image)["Id"] == built.image_id
    assert size // 2 <= proxy.down_bytes <= size * 1.1


async def test_a_rate_limit_of_1_mib_per_second_takes_10_s_for_10_mib(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    image_factory("download/base", "1", load=True, marker="holds-base")
    image, built = _fresh(image_factory, raw, "limited", 11.0)
    top = built.layers[1]
    engine = _engine(clean_engine, proxy, tmp_path / "images", rate=MIB)
    started = time.monotonic()
    try:
        await _pull(engine, image)
    finally:
        await engine.close()
    took = time.monotonic() - started
    expected = len(top.gz) / MIB
    assert expected * 0.85 <= took <= expected * 1.15, (took, expected)


# --- the agent as people run it: `update_agent.download: "agent"` -------------------------


async def test_the_agent_process_downloads_itself_with_kantos_feedback(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    from tests.integration.test_agent import agent_for, desired_state, probe_for, statuses

    # ~3.5 s at 2 MB/s: progress feedback is throttled to 1/s, so at least 2 DOWNLOADING
    # messages whatever the timing (4 MB, 1.5 s, gave 1 in some runs)
    image_factory("download/e2e", "1", marker="e2e", size_mb=8.0)
    raw.forget(f"{clean_engine.registry}/download/e2e:1")
    settings = {
        "download": "agent",
        "download_rate_limit": "2MB",
        "registry_mirrors": {"ghcr.io": proxy.address},
    }
    with agent_for(clean_engine, tmp_path, "dl-agent", **settings) as agent:
        async with probe_for(clean_engine, "dl-agent") as probe:
            await probe.state("initial")
            app = component("app", "1", image="ghcr.io/download/e2e:1")
            probe.desired("d1", desired_state("dl-agent", app))
            messages = await probe.until("d1", {"COMPLETED", "INCOMPLETE"}, wait=60)
            assert statuses(messages) == standalone_statuses()
        progress = [
            m["actions"][0].get("progress", 0)
            for _aid, m in probe.feedback
            if m.get("status") == "DOWNLOADING"
        ]
        assert len(progress) >= 2
        assert progress == sorted(progress)
        await agent.wait_log(
            r"image ghcr.io/download/e2e:1 fetched by the agent: .* limit 2.0 MiB/s"
        )
    assert (
        raw.image("ghcr.io/download/e2e:1")["Id"]
        == image_factory.images[f"{clean_engine.registry}/download/e2e:1"].image_id
    )
    assert not any((tmp_path / "state" / "images-dl-agent" / "blobs" / "sha256").iterdir())


async def test_agents_of_two_domains_on_one_state_dir_fetch_a_shared_layer_at_once(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
) -> None:
    """Agents of several domains may share a state directory (their journals are theirs):
    their downloads too. Two agents fetch, at the same time, images on one new base layer:
    each into its own cache (one cache, shared, had both append to that layer's partial
    file and each tidy away the other's blobs)."""
    from tests.integration.test_agent import agent_for, desired_state, probe_for, statuses

    domains = ("dl-one", "dl-two")
    built = {}
    for domain in domains:
        image = image_factory(
            f"download/{domain}", "1", marker=domain, size_mb=6.0, base="dl-shared-base"
        )
        raw.forget(f"ghcr.io/download/{domain}:1")
        built[domain] = image_factory.images[image]
    shared = tmp_path / "state"
    settings = {
        "download": "agent",
        "registry_mirrors": {"ghcr.io": proxy.address},
        "state_dir": str(shared),
    }
    with (
        agent_for(clean_engine, tmp_path / "one", "dl-one", **settings),
        agent_for(clean_engine, tmp_path / "two", "dl-two", **settings),
    ):
        async with (
            probe_for(clean_engine, "dl-one") as one,
            probe_for(clean_engine, "dl-two") as two,
        ):
            await one.state("initial")
            await two.state("initial")
            for probe, domain in ((one, "dl-one"), (two, "dl-two")):
                # container names are the engine's, for all domains
                app = component(f"app-{domain}", "1", image=f"ghcr.io/download/{domain}:1")
                probe.desired("d1", desired_state(domain, app))
            finals = await asyncio.gather(
                one.until("d1", {"COMPLETED", "INCOMPLETE"}, wait=60),
                two.until("d1", {"COMPLETED", "INCOMPLETE"}, wait=60),
            )
    for messages in finals:
        assert statuses(messages) == standalone_statuses()
    for domain in domains:
        assert raw.image(f"ghcr.io/download/{domain}:1")["Id"] == built[domain].image_id
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == [
        "images-dl-one",
        "images-dl-two",
    ]


async def test_the_agent_process_fails_the_download_when_space_is_short(
    clean_engine: LocalStack,
    proxy: RegistryProxy,
    image_factory: ImageFactory,
    small_cache: Path,
    tmp_path: Path,
) -> None:
    from tests.integration.test_agent import agent_for, desired_state, probe_for, statuses

    image_factory("download/e2e-big", "1", marker="e2e-big", size_mb=20.0)
    settings = {
        "download": "agent",
        "registry_mirrors": {"ghcr.io": proxy.address},
        "state_dir": str(small_cache),
    }
    with agent_for(clean_engine, tmp_path, "dl-short", **settings):
        async with probe_for(clean_engine, "dl-short") as probe:
            await probe.state("initial")
            app = component("app", "1", image="ghcr.io/download/e2e-big:1")
            probe.desired("d1", desired_state("dl-short", app))
            messages = await probe.until("d1", {"COMPLETED", "INCOMPLETE"}, wait=60)
    assert statuses(messages) == standalone_statuses(fails="DOWNLOAD")
    failure = next(m for m in messages if m.get("status") == "DOWNLOAD_FAILURE")
    assert "not enough disk space" in json.dumps(failure)
    assert proxy.down_bytes < 64 * 1024


async def test_the_engines_insecure_registries_are_fetched_as_the_engine_would(
    clean_engine: LocalStack, image_factory: ImageFactory, raw: RawEngine, tmp_path: Path
) -> None:
    """A registry that dockerd lists as insecure (by name) is spoken to in plain HTTP once
    it answers so (the stack's registry, reached under that name); one it does not list is
    refused at its first plain answer, with no retries."""
    _image, built = _fresh(image_factory, raw, "insecure", 1.0)
    reached, to_registry = _to_the_registry(clean_engine)

    remote = f"{INSECURE_REGISTRY}/download/insecure:1"
    client = RegistryClient(connect=to_registry)
    async with _fetching_with(clean_engine, client, tmp_path, raw, remote) as engine:
        await _pull(engine, remote)
        assert raw.image(remote)["Id"] == built.image_id
        assert set(reached) == {("cua-insecure.test", 5000)}
        reached.clear()
        with pytest.raises(PullFailedError, match=r"cua-secure\.test:5000 answers in plain HTTP"):
            await _pull(engine, "cua-secure.test:5000/download/insecure:1")
        assert reached == [("cua-secure.test", 5000)]  # refused at once: no retries


async def test_a_reload_of_the_engines_registry_settings_is_followed_without_a_restart(
    clean_engine: LocalStack,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator lists a registry as insecure on the running engine (its daemon.json, a
    reload): the agent, running all along, follows it at its next download once its read
    of the engine's settings is `INFO_FRESH_FOR` old; refused before the reload."""
    monkeypatch.setattr(docker, "INFO_FRESH_FOR", 0.5)
    _image, built = _fresh(image_factory, raw, "reloaded", 1.0)

    _reached, to_registry = _to_the_registry(clean_engine)
    remote = "cua-reloaded.test:5000/download/reloaded:1"
    client = RegistryClient(connect=to_registry)
    async with _fetching_with(clean_engine, client, tmp_path, raw, remote) as engine:
        with pytest.raises(PullFailedError, match=r"cua-reloaded\.test:5000 answers in plain"):
            await _pull(engine, remote)
        with clean_engine.reloaded_engine(["cua-reloaded.test:5000"]):
            await asyncio.sleep(0.6)
            await _pull(engine, remote)
            assert raw.image(remote)["Id"] == built.image_id


async def test_the_agent_follows_the_engines_proxy_as_the_engine_tells_it(
    clean_engine: LocalStack,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dockerd's proxy (`ENGINE_PROXY`: a login for HTTPS, `NO_PROXY=*`) as its `GET /info`
    tells it: the login hidden (known as hidden, never sent as `xxxxx`), and followed by a
    client without proxies of its own: every registry direct, by the engine's `NO_PROXY`."""
    caplog.set_level(logging.INFO, logger="cua.download.registry")
    engine = DockerEngine(clean_engine.docker_host)
    try:
        proxies = (await engine.engine_registries()).proxies
    finally:
        await engine.close()
    assert proxies == Proxies(
        https=Proxy("cua-proxy.test", 3128, login_hidden=True),
        http=Proxy("cua-proxy.test", 3129),
        direct=("*",),
    )

    _image, built = _fresh(image_factory, raw, "engineproxy", 1.0)
    reached, to_registry = _to_the_registry(clean_engine)

    remote = f"{INSECURE_REGISTRY}/download/engineproxy:1"
    async with _fetching_with(
        clean_engine, RegistryClient(connect=to_registry), tmp_path, raw, remote
    ) as engine:
        await _pull(engine, remote)
        assert raw.image(remote)["Id"] == built.image_id
    assert set(reached) == {("cua-insecure.test", 5000)}  # not the proxy's
    assert (
        "registry connections: proxy cua-proxy.test:3128 for https:// registries, proxy "
        "cua-proxy.test:3129 for http:// registries, not for * (the engine's settings)"
    ) in caplog.text


async def test_a_loopback_registry_in_tls_is_spoken_to_in_tls_as_the_engine_does(
    clean_engine: LocalStack,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loopback registry speaks HTTPS (the real registry, with a certificate nobody
    trusts): the engine's own pull takes it in TLS without checking it; the agent asks in
    plain HTTP first, the registry's 400 says it speaks HTTPS, and from then on the agent
    speaks TLS to it without checking the certificate either (once per client)."""
    _image, built = _fresh(image_factory, raw, "tls", 1.0)
    with clean_engine.tls_registry() as address:
        remote = f"{address}/download/tls:1"
        by_engine = DockerEngine(clean_engine.docker_host)
        try:
            await _pull(by_engine, remote)
        finally:
            await by_engine.close()
        assert raw.image(remote)["Id"] == built.image_id
        raw.forget(remote)

        async def to_tls_registry(host: str, port: int) -> socket.socket:
            assert f"{host}:{port}" == address
            return await clean_engine.socket_to(host, port)

        client = RegistryClient(connect=to_tls_registry)
        caplog.set_level(logging.INFO, logger="cua.download.registry")
        async with _fetching_with(clean_engine, client, tmp_path, raw, remote) as engine:
            for _ in range(2):
                await _pull(engine, remote)
                assert raw.image(remote)["Id"] == built.image_id
                raw.forget(remote)
        switched = [r.getMessage() for r in caplog.records if "speaks HTTPS" in r.getMessage()]
        assert switched == [f"registry {address} speaks HTTPS: spoken to in HTTPS from now on"]


async def test_a_loopback_registry_in_tls_that_ends_plain_http_unanswered_gets_tls(
    clean_engine: LocalStack,
    image_factory: ImageFactory,
    raw: RawEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loopback registry whose TLS ends a plain HTTP request without the 400 (the real
    registry behind Python's TLS): the agent's handshake tells it speaks HTTPS, and the
    image comes in TLS (unchecked, as for any loopback registry)."""
    _image, built = _fresh(image_factory, raw, "tlsfront", 1.0)
    caplog.set_level(logging.INFO, logger="cua.download.registry")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(clean_engine.tls.server_cert), str(clean_engine.tls.server_key))
    async with TlsFront(clean_engine.registry_socket, tls) as front:
        port = front.port
        remote = f"127.0.0.1:{port}/download/tlsfront:1"
        async with _fetching_with(clean_engine, RegistryClient(), tmp_path, raw, remote) as engine:
            await _pull(engine, remote)
            assert raw.image(remote)["Id"] == built.image_id
    switched = [r.getMessage() for r in caplog.records if "speaks HTTPS" in r.getMessage()]
    assert switched == [
        f"registry 127.0.0.1:{port} speaks HTTPS (it ended a plain HTTP request unanswered): "
        "spoken to in HTTPS from now on"
    ]


async def test_a_docker_hub_image_comes_from_the_engines_first_mirror_that_answers(
    clean_engine: LocalStack, image_factory: ImageFactory, raw: RawEngine, tmp_path: Path
) -> None:
    """dockerd's mirrors of Docker Hub, in its order: the first is down, the second (plain
    HTTP, the stack's registry under that name) gives the image; Docker Hub is not tried."""
    image_factory("library/mirrored", "1", marker="mirrored", size_mb=1.0)
    built = image_factory.images[f"{clean_engine.registry}/library/mirrored:1"]
    down, up = (mirror.split("://", 1)[1] for mirror in HUB_MIRRORS)
    reached: list[tuple[str, int]] = []

    async def to_registry(host: str, port: int) -> socket.socket:
        reached.append((host, port))
        if f"{host}:{port}" == up:
            return await clean_engine.registry_socket()
        raise ConnectionRefusedError(f"{host}:{port} is down")

    client = RegistryClient(connect=to_registry)
    async with _fetching_with(clean_engine, client, tmp_path, raw, "mirrored:1") as engine:
        await _pull(engine, "docker.io/library/mirrored:1")
        assert raw.image("mirrored:1")["Id"] == built.image_id
        assert reached[0] == (down, 443)
        assert set(reached[1:]) == {("cua-mirror.test", 5000)}


async def test_downloads_go_through_the_environments_proxy(
    clean_engine: LocalStack, image_factory: ImageFactory, raw: RawEngine, tmp_path: Path
) -> None:
    """`HTTPS_PROXY`/`HTTP_PROXY`: every connection of the agent to the registry is a
    CONNECT tunnel of the proxy (here to the stack's registry, under the name the engine
    lists as insecure: HTTPS tried through one tunnel, then plain HTTP through others)."""
    _image, built = _fresh(image_factory, raw, "proxied", 1.0)

    async def only_the_proxy(host: str, port: int) -> socket.socket:
        assert host == "127.0.0.1", f"{host}:{port} reached without the proxy"
        sock = socket.create_connection((host, port))
        sock.setblocking(False)
        return sock

    async with ConnectProxy(_to_insecure_registry(clean_engine)) as proxy:
        proxies = Proxies.from_environment({"HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url})
        client = RegistryClient(connect=only_the_proxy, proxies=proxies)
        remote = f"{INSECURE_REGISTRY}/download/proxied:1"
        async with _fetching_with(clean_engine, client, tmp_path, raw, remote) as engine:
            await _pull(engine, remote)
            assert raw.image(remote)["Id"] == built.image_id
            assert {target for target, _ in proxy.tunnels} == {INSECURE_REGISTRY}


async def test_the_agent_process_takes_its_proxy_from_its_environment(
    clean_engine: LocalStack, image_factory: ImageFactory, raw: RawEngine, tmp_path: Path
) -> None:
    """`cua run` with `download: "agent"` and `HTTPS_PROXY`/`HTTP_PROXY` in its environment:
    the image comes through the proxy's tunnels (to the stack's registry, under the name the
    engine lists as insecure)."""
    from tests.integration.test_agent import agent_for, desired_state, probe_for, statuses

    _image, built = _fresh(image_factory, raw, "viaproxy", 1.0)
    remote = f"{INSECURE_REGISTRY}/download/viaproxy:1"

    async with ConnectProxy(_to_insecure_registry(clean_engine)) as proxy:
        names = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
        env = {n: proxy.url if n != "NO_PROXY" else "" for n in names}
        env |= {name.lower(): value for name, value in env.items()}  # lower-case would win
        port = proxy.url.rsplit(":", 1)[1]
        try:
            with agent_for(
                clean_engine, tmp_path, "dl-proxy", download="agent", registry_mirrors={}, env=env
            ) as agent:
                # before any pull (a name of the tests' must never reach the DNS resolver)
                await agent.wait_log(re.escape(f"registry connections: proxy 127.0.0.1:{port} for"))
                async with probe_for(clean_engine, "dl-proxy") as probe:
                    await probe.state("initial")
                    app = component("app", "1", image=remote)
                    probe.desired("d1", desired_state("dl-proxy", app))
                    messages = await probe.until("d1", {"COMPLETED", "INCOMPLETE"}, wait=60)
            assert statuses(messages) == standalone_statuses()
            assert raw.image(remote)["Id"] == built.image_id
            assert {target for target, _ in proxy.tunnels} == {INSECURE_REGISTRY}
        finally:
            raw.forget(remote)
