"""Identification edge cases that `make mutation` found untested (spec §3.2, §3.6;
docs/testing.md).

Equivalent mutant left alive in `cua.update.plan`: `by_name.pop(None, None)` for a desired
system container (the container stays in `by_name`, but DESTROY skips system containers).
"""

from __future__ import annotations

import pytest

from cua.containers.compare import ActionKind
from cua.containers.parse import parse_component, parse_desired_state
from cua.containers.state import ContainerStatus
from cua.settings import Manage
from cua.update.plan import CurrentContainer, Plan, PlanError, make_plan
from tests.builders import DOMAIN, component, desired

pytestmark = pytest.mark.unit


def plan(*names: str, present: tuple[str, ...] = (), system: tuple[str, ...] = ()) -> Plan:
    state = desired(*(component(name, image="img:1") for name in names))
    containers = []
    for name in present:
        spec = parse_component(component(name, image="img:1")).spec
        containers.append(
            CurrentContainer(f"id-{name}", name, "img:1", "1", ContainerStatus.RUNNING, False, spec)
        )
    return make_plan(
        parse_desired_state(state, DOMAIN),
        containers,
        domain=DOMAIN,
        manage=Manage.LABELLED,
        system_containers=system,
    )


def test_a_desired_system_container_that_is_not_there_is_skipped() -> None:
    result = plan("sys", "web", system=("sys",))
    assert [(a.name, a.kind) for a in result.actions] == [("web", ActionKind.CREATE)]


def test_the_plan_names_the_system_containers_sorted() -> None:
    assert plan("web", system=("zz", "aa")).system_containers == ("aa", "zz")


def test_reserved_name_error_text() -> None:
    with pytest.raises(PlanError) as caught:
        plan("web.cua-new")
    assert str(caught.value) == (
        "invalid container name web.cua-new: names ending in '.cua-new', '.cua-old' or "
        "'.cua-removed' are reserved by the agent"
    )


def test_unmanaged_name_error_text() -> None:
    with pytest.raises(PlanError) as caught:
        plan("web", present=("web",))
    assert str(caught.value) == (
        "cannot update container web: a container with this name exists and is not managed "
        "by this agent nor by any other update agent (manage: labelled)"
    )
