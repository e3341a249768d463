"""Missing bind-mount source edge cases that `make mutation` found untested (no unit test
reached `cua.containers.mounts`; docs/testing.md)."""

from __future__ import annotations

import pytest

from cua.containers.mounts import missing_source_message
from cua.containers.parse import parse_component
from tests.builders import component

pytestmark = pytest.mark.unit

SPEC = parse_component(
    component("web", image="img:1", mount=["/srv/conf:/etc/web:rprivate", "/srv/data:/data"])
).spec
ENGINE = 'Error response from daemon: invalid mount config for type "bind": '


@pytest.mark.parametrize(
    ("path", "target"),
    [("/srv/data", " (mounted at /data)"), ("/srv/conf", " (mounted at /etc/web)"), ("/x", "")],
)
def test_a_missing_mount_source_is_named_with_where_it_is_mounted(path: str, target: str) -> None:
    text = f"{ENGINE}bind source path does not exist: {path}"
    assert missing_source_message("web", SPEC, text) == (
        f"cannot create container web: the host path {path} of its mount{target} does not "
        "exist on the device; create that file or directory on the device (see the "
        "component's prerequisites), or change the mount in the desired state"
    )


def test_another_engine_error_is_not_about_a_mount() -> None:
    assert missing_source_message("web", SPEC, f"{ENGINE}no such image") is None
