"""Readable renderings of feedback (one line each) and plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from cua.api.models import (
    Action,
    ActionStatusType,
    Component,
    DesiredStateFeedback,
    KeyValuePair,
    StatusType,
)
from cua.display import FeedbackPrinter
from tests.builders import component

pytestmark = pytest.mark.unit


def act(name: str, status: ActionStatusType, message: str, progress: int = 0) -> Action:
    return Action(
        component=Component(id=f"containers:{name}", version="1"),
        status=status,
        message=message,
        progress=progress,
    )


def test_one_line_per_feedback_with_only_the_changes() -> None:
    printer = FeedbackPrinter(start=0.0)
    create = "New container will be created and started."
    lines = [
        printer.format(DesiredStateFeedback(status=StatusType.IDENTIFYING)),
        printer.format(
            DesiredStateFeedback(
                status=StatusType.IDENTIFIED,
                actions=[
                    act("a", ActionStatusType.IDENTIFIED, create),
                    act(
                        "b",
                        ActionStatusType.IDENTIFIED,
                        "Existing container will be destroyed, no longer needed.",
                    ),
                ],
            )
        ),
        printer.format(
            DesiredStateFeedback(
                status=StatusType.DOWNLOADING,
                actions=[
                    act("a", ActionStatusType.DOWNLOADING, create, progress=40),
                    act(
                        "b",
                        ActionStatusType.IDENTIFIED,
                        "Existing container will be destroyed, no longer needed.",
                    ),
                ],
            )
        ),
        printer.format(
            DesiredStateFeedback(
                status=StatusType.IDENTIFICATION_FAILED, message="domain id mismatch"
            )
        ),
    ]
    assert all("\n" not in line for line in lines)
    assert lines[0].split("] ")[1].strip() == "IDENTIFYING"
    assert lines[1].endswith("2 action(s): a: create, b: destroy")
    assert lines[2].endswith("DOWNLOADING           a DOWNLOADING 40%")
    assert lines[3].endswith("IDENTIFICATION_FAILED domain id mismatch")


def test_plan_table_and_json() -> None:
    from cua.containers.compare import ActionKind
    from cua.containers.parse import parse_component
    from cua.display import plan_as_json, plan_table
    from cua.update.plan import Plan, PlannedAction

    web = parse_component(component("web", "2", image="r/web:2"))
    plan = Plan(
        actions=(
            PlannedAction(ActionKind.CREATE, "web", "containers:web", "2", web, None),
            PlannedAction(
                ActionKind.RECREATE, "db", "containers:db", "10", web, None, ("image", "env")
            ),
        ),
        warnings=("container web: port ignored",),
    )
    rows = plan_table(plan).splitlines()
    assert rows[0].split() == ["ACTION", "CONTAINER", "VERSION", "DETAILS"]
    assert rows[1].split() == ["CREATE", "web", "2", "image", "r/web:2"]
    assert rows[2].split() == ["RECREATE", "db", "10"]
    assert rows[3:5] == ["    image: differs", "    env: differs"]  # no current spec known
    assert rows[5] == "warning: container web: port ignored"
    data = plan_as_json(plan)
    assert data["actions"][1] == {
        "kind": "RECREATE",
        "component": {"id": "containers:db", "version": "10"},
        "message": "Existing container will be destroyed and replaced by a new one.",
        "differences": ["image", "env"],
    }
    assert plan_table(Plan(actions=())) == "nothing to do"


def test_plan_shows_each_differing_field_old_to_new_with_env_values_hidden() -> None:
    from cua.containers.parse import ParsedComponent, ParsedDesiredState, parse_component
    from cua.containers.state import ContainerStatus
    from cua.display import plan_table
    from cua.settings import Manage
    from cua.update.plan import CurrentContainer, make_plan

    def parsed(image: str, *config: tuple[str, str]) -> ParsedComponent:
        return parse_component(component("web", "2", pairs=[("image", image), *config]))

    old = parsed(
        "r/web:1",
        ("env", "TOKEN=old-secret"),
        ("env", "MODE=x"),
        ("port", "80:80"),
        ("restartPolicy", "always"),
    )
    new = parsed(
        "r/web:2",
        ("env", "TOKEN=new-secret"),
        ("env", "MODE=x"),
        ("port", "8080:80"),
        ("restartPolicy", "no"),
    )
    plan = make_plan(
        ParsedDesiredState(containers=(new,), baselines=(), system_containers=None, warnings=()),
        [CurrentContainer("id1", "web", "r/web:1", "1", ContainerStatus.RUNNING, True, old.spec)],
        domain="containers",
        manage=Manage.LABELLED,
        system_containers=(),
    )
    assert plan_table(plan).splitlines() == [
        "ACTION    CONTAINER  VERSION  DETAILS",
        "RECREATE  web        2",
        "    image: r/web:1 → r/web:2",
        "    env: TOKEN=<hidden> → TOKEN=<hidden>",
        "    port: 80:80/tcp → 8080:80/tcp",
        "    restartPolicy: always → no",
    ]
    assert "secret" not in plan_table(plan)
    # README shows this very plan.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "\n".join("    " + line for line in plan_table(plan).splitlines()) in readme


def test_state_table_lists_containers_with_managed_column() -> None:
    import json

    from cua.api.models import Inventory
    from cua.display import state_table

    data = json.loads((Path(__file__).parents[1] / "data" / "currentstate-leda.json").read_text())
    inventory = Inventory.model_validate(data.get("payload", data))
    inventory.software_nodes[1].parameters.append(KeyValuePair(key="managed", value="false"))
    rows = state_table(inventory).splitlines()
    assert rows[0].split() == ["NAME", "VERSION", "IMAGE", "STATUS", "SINCE", "MANAGED"]
    assert rows[1].split() == [
        "hvacservice-example",
        "v0.1.0",
        "ghcr.io/eclipse/kuksa.val.services/hvac_service:v0.1.0",
        "Running",
        "2023-08-25",
        "08:51:21",
        "UTC",
        "no",
    ]
    assert all(row.split()[-1] == "yes" for row in rows[2:])
    assert len(rows) == 1 + sum(
        1 for n in inventory.software_nodes if n.type and n.type.value == "CONTAINER"
    )
    assert state_table(Inventory()) == "no containers"
