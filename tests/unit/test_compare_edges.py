"""Comparison edge cases that `make mutation` found untested (spec §3.3; docs/testing.md).

Each test pins one rule a deliberate bug in `cua.containers.compare` would break.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from cua.containers.compare import ActionKind, Comparison, compare
from cua.containers.spec import ContainerSpec, LogMode, ProcessConfig
from tests.builders import log_config

pytestmark = pytest.mark.unit

BASE = ContainerSpec(name="web", image="registry/web:1")


def test_log_max_buffer_size_alone_is_a_recreate() -> None:
    # Same mode on both sides: only the buffer size differs.
    current = replace(BASE, log=log_config(mode=LogMode.NON_BLOCKING, max_buffer_size="1M"))
    desired = replace(BASE, log=log_config(mode=LogMode.NON_BLOCKING, max_buffer_size="2M"))
    assert compare(desired, current) == Comparison(ActionKind.RECREATE, ("logMaxBufferSize",))


def test_same_size_sets_where_only_one_holds_the_other_differ() -> None:
    # Every element of the current env is desired, but not every desired one is current.
    current = replace(BASE, config=ProcessConfig(env=("A=1", "A=1")))
    desired = replace(BASE, config=ProcessConfig(env=("A=1", "B=2")))
    assert compare(desired, current) == Comparison(ActionKind.RECREATE, ("env",))
    assert compare(current, desired) == Comparison(ActionKind.RECREATE, ("env",))


def test_a_cmd_given_where_there_was_none_is_a_recreate() -> None:
    current = replace(BASE, config=ProcessConfig(env=("A=1",)))
    desired = replace(BASE, config=ProcessConfig(env=("A=1",), cmd=("run",)))
    assert compare(desired, current) == Comparison(ActionKind.RECREATE, ("cmd",))
    assert compare(current, desired) == Comparison(ActionKind.RECREATE, ("cmd",))


def test_the_same_log_max_buffer_size_on_both_sides_is_no_difference() -> None:
    log = log_config(mode=LogMode.NON_BLOCKING, max_buffer_size="1M")
    assert compare(replace(BASE, log=log), replace(BASE, log=log)).kind is ActionKind.CHECK
