"""Comparison edge cases that `make mutation` found untested (spec §3.3; docs/testing.md).

Each test pins one rule a deliberate bug in `cua.containers.compare` would break.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from cua.containers.compare import ActionKind, Comparison, compare
from cua.containers.spec import ContainerSpec, LogConfig, LogMode

pytestmark = pytest.mark.unit

BASE = ContainerSpec(name="web", image="registry/web:1")


def test_log_max_buffer_size_alone_is_a_recreate() -> None:
    # Same mode on both sides: only the buffer size differs.
    current = replace(BASE, log=LogConfig(mode=LogMode.NON_BLOCKING, max_buffer_size="1M"))
    desired = replace(BASE, log=LogConfig(mode=LogMode.NON_BLOCKING, max_buffer_size="2M"))
    assert compare(desired, current) == Comparison(ActionKind.RECREATE, ("logMaxBufferSize",))
