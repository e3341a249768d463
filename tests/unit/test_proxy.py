"""The test registry proxy (`cua_dev.proxy`) stops cleanly: no task of its loop is left
pending, whatever its connections were doing (one left pending ran its cleanup when
collected, on the closed loop, and failed whichever test ran then)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from cua_dev.proxy import RegistryProxy, Streams

pytestmark = pytest.mark.unit


async def _registry_never_answers() -> Streams:
    await asyncio.Event().wait()  # the connection to the registry never completes
    raise AssertionError("unreachable")


def test_no_task_is_left_pending_when_the_proxy_stops() -> None:
    proxy = RegistryProxy(_registry_never_answers)
    with proxy, socket.create_connection(("127.0.0.1", proxy.port)):
        deadline = time.monotonic() + 5
        while proxy.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.connections == 1  # its handler waits for the registry
    left = [task for task in asyncio.all_tasks(proxy._loop) if not task.done()]
    assert left == []
