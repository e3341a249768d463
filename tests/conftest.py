"""Shared fixtures. The local stack starts lazily: only a test that asks for it starts it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from cua.engine.docker import DockerEngine
from cua_dev.images import ImageFactory
from cua_dev.stack import LocalStack


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """One private dockerd + registry + mosquitto for the whole session."""
    with LocalStack() as local_stack:
        yield local_stack


@pytest.fixture(scope="session")
def docker_host(stack: LocalStack) -> str:
    """`unix:///tmp/cua-.../docker.sock` of the private dockerd."""
    return stack.docker_host


@pytest.fixture(scope="session")
def registry(stack: LocalStack) -> str:
    """`127.0.0.1:<port>` of the local registry."""
    return stack.registry


@pytest.fixture
def clean_engine(stack: LocalStack) -> Iterator[LocalStack]:
    """No container before and after the test; services a previous test stopped restarted."""
    stack.ensure_running()
    stack.remove_all_containers()
    yield stack
    stack.remove_all_containers()


@pytest.fixture
async def engine(clean_engine: LocalStack) -> AsyncIterator[DockerEngine]:
    """A `DockerEngine` on the private dockerd, with no container before and after the test."""
    docker_engine = DockerEngine(clean_engine.docker_host, timeout=30)
    yield docker_engine
    await docker_engine.close()


@pytest.fixture(scope="session")
def image_factory(stack: LocalStack) -> ImageFactory:
    """`image_factory(name, tag, push=True, load=False, **ImageSpec fields) -> reference`."""
    return ImageFactory(stack.registry, stack.docker_host, stack.netns)
