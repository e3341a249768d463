"""Current state edge cases that `make mutation` found untested (spec §5; docs/testing.md)."""

from __future__ import annotations

import logging

import pytest

from cua import __version__
from cua.current_state import CurrentStateReader
from cua.engine.base import EngineError, EngineUnavailableError
from cua.testing.fake_engine import FakeEngine
from tests.builders import add_managed, settings

pytestmark = pytest.mark.unit


async def test_the_agent_node_carries_the_agent_version(engine: FakeEngine) -> None:
    [root] = (await CurrentStateReader(engine, settings()).read()).to_wire()["softwareNodes"]
    assert (root["id"], root["version"]) == ("containers-update-agent", __version__)


@pytest.mark.parametrize("verbose", [False, True])
async def test_verbose_inventory_lists_every_parameter(engine: FakeEngine, verbose: bool) -> None:
    add_managed(engine, "web", image="img:1")
    reader = CurrentStateReader(engine, settings(verbose_inventory=verbose))
    nodes = (await reader.read()).to_wire()["softwareNodes"]
    keys = {p["key"] for p in nodes[1]["parameters"]}
    assert ("privileged" in keys, "hostName" in keys) == (verbose, verbose)


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (EngineUnavailableError("engine down"), logging.DEBUG),  # the engine watcher says so
        (EngineError("list failed"), logging.WARNING),
    ],
)
async def test_an_engine_that_fails_gives_the_agent_node_only_and_a_log_line(
    engine: FakeEngine, caplog: pytest.LogCaptureFixture, error: EngineError, level: int
) -> None:
    add_managed(engine, "web", image="img:1")
    engine.fail_next("list_containers", error)
    with caplog.at_level(logging.DEBUG, logger="cua.current_state"):
        inventory = await CurrentStateReader(engine, settings()).read()
    assert [n["id"] for n in inventory.to_wire()["softwareNodes"]] == ["containers-update-agent"]
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (level, f"current state: cannot list containers: {error}")
    ]
