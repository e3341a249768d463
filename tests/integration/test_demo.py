"""`make demo` leaves a trail: the agent log and every MQTT message (its next steps are
README's commands: tests/unit/test_readme.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cua_dev.demo import run_demo
from cua_dev.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_keeps_the_agent_log_and_the_mqtt_messages(
    clean_engine: LocalStack, tmp_path: Path
) -> None:
    assert await run_demo(clean_engine, tmp_path)
    log = (tmp_path / "agent.log").read_text()
    assert 'desired state "activity-id-leda-containers" received' in log
    # the default download: the agent's own, loaded as archives (the stack's dockerd, in its
    # namespace, does not reach the agent's loopback registry); the web server's image is
    # the demo's alone (Leda's stand-ins may be in the engine from other tests)
    assert "image ghcr.io/demo/webui:1.0 fetched by the agent" in log
    assert "images are loaded as archives" in log
    messages = [
        json.loads(line) for line in (tmp_path / "mqtt-messages.jsonl").read_text().splitlines()
    ]
    topics = {m["topic"] for m in messages}
    assert {
        "containersupdate/desiredstate",
        "containersupdate/desiredstatefeedback",
        "containersupdate/currentstate",
    } <= topics
    quickstart = json.loads((ROOT / "examples/quickstart-desired-state.json").read_text())
    published = [m["message"] for m in messages if m["topic"] == "containersupdate/desiredstate"]
    assert quickstart in published  # the example as shipped
    finals = [
        m["message"]["payload"]["status"]
        for m in messages
        if m["topic"] == "containersupdate/desiredstatefeedback"
        and m["message"]["activityId"] == "quickstart-1"
    ]
    assert finals[-1] == "COMPLETED"
