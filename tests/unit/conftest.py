"""Unit-test settings and the fixtures the update-operation tests share."""

from __future__ import annotations

import pytest
from hypothesis import settings

from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from tests.builders import HELLO

# Timing is never asserted (DEVELOPERS.md); hypothesis' per-example deadline would be one.
settings.register_profile("cua-unit", deadline=None)
settings.load_profile("cua-unit")


@pytest.fixture
def engine() -> FakeEngine:
    """A fake engine whose registry holds the images the update-operation tests use."""
    fake = FakeEngine()
    for ref in ("img:1", "img:2", HELLO):
        fake.add_registry_image(ref)
    return fake


@pytest.fixture
def pub() -> RecordingPublisher:
    return RecordingPublisher()
