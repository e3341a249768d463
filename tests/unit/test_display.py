"""Readable renderings of feedback (one line each) and plans."""

from __future__ import annotations

import pytest

from cua.api.models import Action, ActionStatusType, Component, DesiredStateFeedback, StatusType
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
    assert rows[2].split() == ["RECREATE", "db", "10", "differs:", "image,", "env"]
    assert rows[3] == "warning: container web: port ignored"
    data = plan_as_json(plan)
    assert data["actions"][1] == {
        "kind": "RECREATE",
        "component": {"id": "containers:db", "version": "10"},
        "message": "Existing container will be destroyed and replaced by a new one.",
        "differences": ["image", "env"],
    }
    assert plan_table(Plan(actions=())) == "nothing to do"
