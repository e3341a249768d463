"""Configuration edge cases that `make mutation` found untested (docs/testing.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cua.config import load_config

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("zero", ["0", "0s", "0ms"])
def test_a_zero_duration_is_zero_not_the_default(tmp_path: Path, zero: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"connection": {"keep_alive": zero, "connect_timeout": zero}}))
    config = load_config(path)
    assert (config.mqtt.keep_alive, config.mqtt.connect_timeout) == (0.0, 0.0)
