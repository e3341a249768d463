"""Unit-test settings: property tests must not fail on a slow CI machine's timing."""

from __future__ import annotations

from hypothesis import settings

# Timing is never asserted (DEVELOPERS.md); hypothesis' per-example deadline would be one.
settings.register_profile("cua-unit", deadline=None)
settings.load_profile("cua-unit")
