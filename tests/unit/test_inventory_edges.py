"""Inventory edge cases that `make mutation` found untested (spec §5.2-§5.4; docs/testing.md).

Equivalent mutants left alive in `cua.containers.inventory`:
- `format_port`: `text = f"{ip}:"` for `text += ...` (text is still empty there).
- `image_version`: `find("/")` for `rfind("/")`, or one more character skipped: they differ
  only for a `:` or `@` before the last `/`, or a name that starts with one, which no
  image reference has.
"""

from __future__ import annotations

import pytest

from cua.containers.inventory import InventoryContainer, build_inventory, configuration_parameters
from cua.containers.parse import parse_component
from cua.containers.spec import ContainerSpec
from cua.containers.state import ContainerDetails, ContainerState, ContainerStatus
from tests.builders import component

pytestmark = pytest.mark.unit

CREATED = "2023-08-25T08:51:20.887363594Z"


def container(image: str | None = None) -> InventoryContainer:
    spec = ContainerSpec(name="c", image="registry:5000/c:2", host_name="c-host",
                         domain_name="c-domain")  # fmt: skip
    details = ContainerDetails(
        id="0123",
        name="c",
        image="sha256:abc",
        labels={},
        state=ContainerState(ContainerStatus.RUNNING, started_at=CREATED),
        created=CREATED,
        spec=spec,
    )
    return InventoryContainer(details, image=image)


def parameters(node_container: InventoryContainer, *, verbose: bool) -> dict[str, str]:
    inventory = build_inventory("containers", "1", [node_container], verbose=verbose)
    return {p.key: p.value for p in inventory.software_nodes[1].parameters}


def test_build_inventory_passes_verbose_on() -> None:
    verbose = parameters(container(), verbose=True)
    assert verbose["privileged"] == "false"
    assert verbose["manuallyStopped"] == "false"
    assert "privileged" not in parameters(container(), verbose=False)


def test_build_inventory_reports_the_image_as_given() -> None:
    given = container(image="c:2")
    inventory = build_inventory("containers", "1", [given], verbose=False)
    node = inventory.software_nodes[1]
    assert (node.parameters[0].key, node.parameters[0].value) == ("image", "c:2")
    assert node.version == "2"


def test_configuration_parameters_name_every_field_even_at_its_default() -> None:
    """A plan shows a field changed from its default as `false -> true`, not `-> true`."""
    spec = parse_component(component("web", image="img:1")).spec
    assert configuration_parameters(spec)[:9] == [
        ("image", "img:1"),
        ("domainName", "web-domain"),
        ("hostName", "web-host"),
        ("terminal", "false"),
        ("interactive", "false"),
        ("privileged", "false"),
        ("restartPolicy", "unless-stopped"),
        ("restartMaxRetries", "0"),
        ("restartTimeout", "0s"),
    ]
