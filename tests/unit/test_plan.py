"""Identification (spec §3.2, §3.5, §3.6; D12, D13; ownership), pure: no engine."""

from __future__ import annotations

import dataclasses

import pytest

from cua.containers.compare import ActionKind
from cua.containers.parse import parse_component, parse_desired_state
from cua.containers.spec import RestartPolicy, RestartPolicyType
from cua.containers.state import ContainerStatus
from cua.settings import Manage
from cua.update.plan import CurrentContainer, PlanError, make_plan
from tests.builders import DOMAIN, component, desired

pytestmark = pytest.mark.unit


def current(
    name: str,
    *,
    managed: bool = True,
    status: ContainerStatus = ContainerStatus.RUNNING,
    **config: str,
) -> CurrentContainer:
    parsed = parse_component(component(name, **config))
    return CurrentContainer(
        id=f"id-{name}",
        name=name,
        image=parsed.spec.image,
        version="1.0",
        status=status,
        managed=managed,
        spec=parsed.spec,
    )


def plan_of(state, containers, manage=Manage.LABELLED, system=()):  # type: ignore[no-untyped-def]
    parsed = parse_desired_state(state, DOMAIN)
    return make_plan(parsed, containers, domain=DOMAIN, manage=manage, system_containers=system)


def kinds(plan) -> list[tuple[str, ActionKind]]:  # type: ignore[no-untyped-def]
    return [(a.name, a.kind) for a in plan.actions]


def test_each_action_kind_in_desired_order_then_destroy() -> None:
    state = desired(
        component("web", image="img:2"),
        component("api", image="img:1"),
        component("svc", image="img:1", restartPolicy="no"),
        component("new", image="img:1"),
    )
    plan = plan_of(
        state,
        [
            current("zoo", image="img:1"),
            current("web", image="img:1"),
            current("api", image="img:1"),
            current("svc", image="img:1"),
            current("old", image="img:1"),
        ],
    )
    assert kinds(plan) == [
        ("web", ActionKind.RECREATE),
        ("api", ActionKind.CHECK),
        ("svc", ActionKind.UPDATE),
        ("new", ActionKind.CREATE),
        ("old", ActionKind.DESTROY),
        ("zoo", ActionKind.DESTROY),
    ]
    assert plan.actions[0].component_id == "containers:web"
    assert plan.actions[0].differences == ("image",)
    assert "restartPolicy" in plan.actions[2].differences


def test_d13_destroy_actions_sorted_by_name() -> None:
    plan = plan_of(desired(), [current(n, image="i:1") for n in ("zz", "mm", "aa-x", "qq")])
    assert [a.name for a in plan.actions] == ["aa-x", "mm", "qq", "zz"]
    assert all(a.kind is ActionKind.DESTROY for a in plan.actions)


def test_destroy_version_comes_from_image_and_desired_version_is_echoed() -> None:
    state = desired(component("web", "9.9", image="img:1"))
    plan = plan_of(state, [current("web", image="img:1"), current("gone-x", image="reg/x:v7")])
    assert [(a.version, a.kind) for a in plan.actions] == [
        ("9.9", ActionKind.CHECK),  # version is never compared (§3.7)
        ("1.0", ActionKind.DESTROY),
    ]


def test_nothing_desired_nothing_present_is_empty() -> None:
    assert plan_of(desired(), []).actions == ()


def test_system_containers_from_settings_get_no_action() -> None:
    state = desired(component("sua", image="img:2"))
    plan = plan_of(
        state, [current("sua", image="img:1"), current("mgr", image="i:1")], system=("sua", "mgr")
    )
    assert plan.actions == ()


def test_system_containers_of_the_desired_state_replace_the_settings_list() -> None:
    state = desired(config=[("systemContainers", "keep-x, other")])
    plan = plan_of(
        state, [current("keep-x", image="i:1"), current("sua", image="i:1")], system=("sua",)
    )
    assert kinds(plan) == [("sua", ActionKind.DESTROY)]


def test_labelled_mode_leaves_unmanaged_containers_alone() -> None:
    plan = plan_of(desired(), [current("foreign", managed=False, image="i:1")])
    assert plan.actions == ()


def test_labelled_mode_desired_name_taken_by_unmanaged_fails_identification() -> None:
    state = desired(component("web", image="img:1"))
    with pytest.raises(PlanError, match=r"web.*not managed by this agent"):
        plan_of(state, [current("web", managed=False, image="img:1")])


def test_all_mode_compares_and_destroys_unmanaged_containers() -> None:
    state = desired(component("web", image="img:2"))
    plan = plan_of(
        state,
        [
            current("web", managed=False, image="img:1"),
            current("foreign", managed=False, image="i:1"),
        ],
        manage=Manage.ALL,
    )
    assert kinds(plan) == [("web", ActionKind.RECREATE), ("foreign", ActionKind.DESTROY)]


def test_transient_names_are_not_current_containers() -> None:
    plan = plan_of(
        desired(component("web", image="img:1")),
        [current("web.cua-new", image="img:1"), current("web.cua-old", image="i:1")],
    )
    assert kinds(plan) == [("web", ActionKind.CREATE)]


def test_duplicate_names_last_listed_wins() -> None:
    first = current("web", image="img:1")
    second = dataclasses.replace(current("web", image="img:2"), id="id-second")
    plan = plan_of(desired(component("web", image="img:2")), [first, second])
    assert kinds(plan) == [("web", ActionKind.CHECK)]
    assert plan.actions[0].current is second


def test_d12_no_update_when_compared_with_recorded_spec() -> None:
    # The recorded spec of a container created with memory only: no engine-filled swap.
    state = desired(component("web", image="img:1", memory="200M"))
    plan = plan_of(state, [current("web", image="img:1", memory="200M")])
    assert kinds(plan) == [("web", ActionKind.CHECK)]


def test_update_for_restart_policy_change() -> None:
    engine_side = current("web", image="img:1")
    assert engine_side.spec is not None
    changed = dataclasses.replace(
        engine_side,
        spec=dataclasses.replace(
            engine_side.spec, restart=RestartPolicy(type=RestartPolicyType.ALWAYS)
        ),
    )
    plan = plan_of(desired(component("web", image="img:1")), [changed])
    assert kinds(plan) == [("web", ActionKind.UPDATE)]


def test_baselines_named_implicit_and_remove_components() -> None:
    state = desired(
        component("web", image="i:1"),
        component("api", image="i:1"),
        component("solo", image="i:1"),
        baselines={"front": ["containers:web", "containers:api", "other:thing"]},
    )
    plan = plan_of(state, [current("gone-x", image="i:1")])
    assert dict(plan.baselines) == {
        "front": (0, 1),
        "containers:solo": (2,),
        "containers:remove-components": (3,),
    }


def test_remove_components_baseline_is_always_there() -> None:
    plan = plan_of(desired(component("web", image="i:1")), [])
    assert plan.baselines["containers:remove-components"] == ()


def test_warnings_of_lenient_parsing_are_kept() -> None:
    plan = plan_of(desired(component("web", image="i:1", port="localhost:1:2")), [])
    assert plan.warnings
    assert "port" in plan.warnings[0]


@pytest.mark.parametrize("suffix", [".cua-new", ".cua-old", ".cua-removed"])
def test_reserved_transient_suffix_in_desired_name_fails(suffix: str) -> None:
    with pytest.raises(PlanError, match=f"names ending in .*'{suffix}'.* are reserved"):
        plan_of(desired(component("web" + suffix, image="i:1")), [])


async def test_settled_containers_are_read_from_the_listing_with_their_labels_decoded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second read of settled containers neither inspects nor decodes their labels
    again (they never change), and gives the same containers; one that is gone is forgotten."""
    from cua.containers.labels import encode_labels
    from cua.testing.fake_engine import FakeEngine
    from cua.update import identify

    engine = FakeEngine()
    components = [parse_component(component(name, "1", image="img:1")) for name in "abc"]
    ids = [engine.add_container(c.id, c.spec, encode_labels(c, DOMAIN)) for c in components]
    decoded: list[str] = []
    real = identify.decode_labels

    def counting(labels: dict[str, str]) -> object:
        decoded.append(labels.get("name", "?"))
        return real(labels)

    monkeypatch.setattr(identify, "decode_labels", counting)
    settled = identify.Settled()
    names = {"a", "b", "c"}
    first = await identify.current_containers(engine, names, Manage.LABELLED, DOMAIN, settled)
    assert len(decoded) == 3
    assert engine.call_count("inspect_container") == 3
    again = await identify.current_containers(engine, names, Manage.LABELLED, DOMAIN, settled)
    assert (len(decoded), engine.call_count("inspect_container")) == (3, 3)
    assert again == first
    assert all(c.spec is not None for c in again)
    await engine.remove_container(ids[0])
    await identify.current_containers(engine, names, Manage.LABELLED, DOMAIN, settled)
    assert ids[0] not in settled
    assert ids[1] in settled
