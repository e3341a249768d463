"""Fixtures of the integration tests that several modules use."""

from __future__ import annotations

import pytest

from cua_dev.images import ImageFactory


@pytest.fixture(scope="module")
def app_images(image_factory: ImageFactory) -> dict[str, str]:
    """v1 and v2 of an app, and `slow`: `sleep` as PID 1 ignores SIGTERM, so stopping it
    takes the whole stop timeout."""
    return {
        "v1": image_factory("agent/app", "v1", marker="v1"),
        "v2": image_factory("agent/app", "v2", marker="v2"),
        "slow": image_factory("agent/slow", "v1", cmd=("sleep", "3600"), marker="ignores TERM"),
    }
