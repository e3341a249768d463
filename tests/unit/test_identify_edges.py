"""Identification and reporting edge cases that `make mutation` found untested (spec §3.2,
§5; our-behaviour "Containers that the agent owns"; docs/testing.md).

Equivalent mutants left alive in `cua.update.identify`:
- `inventory_entry`: `managed=None` for a configured system container (read as False), and
  no `managed=` (True) for an unlabelled or unreadable one: `managed` is only read with
  manage: labelled, where that branch is only reached by this domain's containers.
- `inventory_entry`: no `image=` (or None) for one of ours: the reported spec is then the
  recorded one, whose image is the image as given (`parse_component` sets both alike).
"""

from __future__ import annotations

import dataclasses

import pytest

from cua.containers.labels import LABEL_SPEC, LabelledSpec, encode_labels
from cua.containers.parse import parse_component
from cua.containers.spec import ContainerSpec, RestartPolicy, RestartPolicyType
from cua.settings import Manage
from cua.testing.fake_engine import FakeEngine
from cua.update.identify import (
    Settled,
    current_containers,
    effective_spec,
    inventory_entry,
    normalize_engine_spec,
)
from cua.update.plan import CurrentContainer
from tests.builders import DOMAIN, component, memory_limits, settings

pytestmark = pytest.mark.unit


def spec_of(name: str = "web", **config: str) -> ContainerSpec:
    return parse_component(component(name, image="img:1", **config)).spec


def ours(engine: FakeEngine, name: str, image_as_given: str = "img:1", **config: str) -> str:
    """One of this domain's containers; its labels record `image_as_given`, the engine
    knows the image as `img:1`."""
    parsed = parse_component(component(name, image=image_as_given, **config))
    spec = dataclasses.replace(parsed.spec, image="img:1")
    return engine.add_container(name, spec, encode_labels(parsed, DOMAIN))


def labelled_by(engine: FakeEngine, name: str, domain: str) -> str:
    parsed = parse_component(component(name, image="img:1"))
    return engine.add_container(name, parsed.spec, encode_labels(parsed, domain))


async def identify(
    engine: FakeEngine,
    *desired: str,
    manage: Manage = Manage.LABELLED,
    settled: Settled | None = None,
) -> dict[str, CurrentContainer]:
    found = await current_containers(engine, desired, manage, DOMAIN, settled)
    return {c.name: c for c in found}


def inspected(engine: FakeEngine) -> list[str]:
    ids = [call.args[0] for call in engine.calls if call.method == "inspect_container"]
    names = {c.id: c.name for c in engine._containers.values()}
    return [names[i] for i in ids]


# --- current_containers ---------------------------------------------------------------------


async def test_only_a_desired_container_gets_a_spec_to_compare(engine: FakeEngine) -> None:
    ours(engine, "web")
    ours(engine, "gone")
    found = await identify(engine, "web")
    assert found["web"].spec == spec_of()
    assert (found["gone"].spec, found["gone"].managed) == (None, True)


async def test_manage_all_compares_a_desired_unlabelled_container_with_its_engine_spec(
    engine: FakeEngine,
) -> None:
    engine.add_container("db", spec_of("db"))
    labelled_by(engine, "other", "elsewhere")
    found = await identify(engine, "db", manage=Manage.ALL)
    assert (found["db"].spec, found["db"].managed) == (spec_of("db"), False)
    assert found["other"].spec is None
    # manage: labelled never compares it (a name held by no agent).
    found = await identify(engine, "db")
    assert (found["db"].spec, found["db"].owner) == (None, None)


async def test_another_domains_container_is_named_by_its_labels_without_an_inspect(
    engine: FakeEngine,
) -> None:
    labelled_by(engine, "other", "elsewhere")
    engine.add_container("plain", spec_of("plain"))
    ours(engine, "web", "registry.example/web:2")
    found = await identify(engine)
    assert inspected(engine) == ["web"]  # this domain's: are its labels the image's?
    assert (found["other"].owner, found["other"].managed) == ("elsewhere", False)
    assert found["plain"].owner is None
    assert (found["web"].image, found["web"].version) == ("registry.example/web:2", "2")


async def test_labels_that_come_from_the_image_own_nothing_and_name_no_image(
    engine: FakeEngine,
) -> None:
    parsed = parse_component(component("web", image="registry.example/web:2"))
    labels = encode_labels(parsed, DOMAIN)
    engine.add_image("img:9", labels=labels)
    engine.add_container("web", dataclasses.replace(spec_of(), image="img:9"), labels)
    found = await identify(engine, "web")
    assert (found["web"].owner, found["web"].managed, found["web"].spec) == (None, False, None)
    assert found["web"].image == "img:9"  # as the engine reports it, not the labels


async def test_a_settled_container_is_not_inspected_again_until_it_changes(
    engine: FakeEngine,
) -> None:
    ours(engine, "web")
    svc = ours(engine, "svc", restartPolicy="no")
    engine._containers[svc].spec = dataclasses.replace(
        spec_of("svc"), restart=RestartPolicy(RestartPolicyType.ALWAYS)
    )  # a runtime update since: the labels cannot tell
    settled = Settled()
    await identify(engine, "web", "svc", settled=settled)
    engine.calls.clear()
    found = await identify(engine, "web", "svc", settled=settled)
    assert inspected(engine) == ["svc"]
    assert found["web"].spec == spec_of()  # from the labels
    assert (found["web"].owner, found["web"].managed) == (DOMAIN, True)
    assert found["svc"].spec is not None
    assert found["svc"].spec.restart == RestartPolicy(RestartPolicyType.ALWAYS)


async def test_a_transient_name_is_never_a_desired_one(engine: FakeEngine) -> None:
    ours(engine, "web.cua-new")
    found = await identify(engine, "web.cua-new")
    assert found["web.cua-new"].spec is None


# --- effective_spec, normalize_engine_spec ---------------------------------------------------


def test_swap_of_twice_the_memory_is_the_engines_default_not_a_setting() -> None:
    spec = spec_of(memory="100M", memorySwap="200M")
    normalized = normalize_engine_spec(spec)
    assert normalized.resources == memory_limits("100M")
    assert dataclasses.replace(normalized, resources=None) == dataclasses.replace(
        spec, resources=None
    )
    other = spec_of(memory="100M", memorySwap="300M")
    assert normalize_engine_spec(other) == other


ALWAYS, ON_FAILURE, NO = (
    RestartPolicyType.ALWAYS,
    RestartPolicyType.ON_FAILURE,
    RestartPolicyType.NO,
)


@pytest.mark.parametrize(
    ("recorded", "engine", "kept"),
    [
        # max_retries counts only for on-failure (the engine may report any other value).
        (RestartPolicy(ALWAYS, 0, 10), RestartPolicy(ALWAYS, 2), True),
        (RestartPolicy(ON_FAILURE, 3, 10), RestartPolicy(ON_FAILURE, 3), True),
        (RestartPolicy(ON_FAILURE, 3, 10), RestartPolicy(ON_FAILURE, 5), False),
        (RestartPolicy(NO, 0, 10), RestartPolicy(ALWAYS), False),
    ],
)
def test_a_runtime_restart_policy_change_is_taken_from_the_engine(
    recorded: RestartPolicy, engine: RestartPolicy, kept: bool
) -> None:
    """The timeout (ours, not the engine's) stays as recorded while the type does."""
    mine = dataclasses.replace(spec_of(), restart=recorded)
    theirs = dataclasses.replace(spec_of(), restart=engine)
    spec = effective_spec(_labelled(mine), theirs)
    if kept:
        assert spec.restart == recorded
    else:
        timeout = recorded.timeout if engine.type is recorded.type else 0
        assert spec.restart == dataclasses.replace(engine, timeout=timeout)


@pytest.mark.parametrize(
    ("recorded", "engine", "kept"),
    [
        (("100M", "50M"), ("102400k", "51200k"), True),  # the same bytes: as recorded
        (("100M", "50M"), ("100M", "80M"), False),
        (("100M", "50M"), ("200M", "50M"), False),
        (("100M", ""), ("100M", "50M"), False),
    ],
)
def test_runtime_memory_limits_are_compared_in_bytes(
    recorded: tuple[str, str], engine: tuple[str, str], kept: bool
) -> None:
    mine = dataclasses.replace(spec_of(), resources=memory_limits(*recorded))
    theirs = dataclasses.replace(spec_of(), resources=memory_limits(*engine))
    spec = effective_spec(_labelled(mine), theirs)
    assert spec.resources == (mine if kept else theirs).resources


def _labelled(spec: ContainerSpec) -> LabelledSpec:
    return LabelledSpec("web", "1.0", spec.image, spec)


# --- inventory_entry ---------------------------------------------------------------------------


async def test_our_container_is_reported_as_its_labels_record_it(engine: FakeEngine) -> None:
    parsed = parse_component(component("web", image="registry.example/web:2"))
    engine_spec = dataclasses.replace(parsed.spec, image="img:1", domain_name="filled-in")
    web = engine.add_container("web", engine_spec, encode_labels(parsed, DOMAIN))
    entry = inventory_entry(await engine.inspect_container(web), settings())
    assert entry is not None
    assert entry.details.spec == parsed.spec  # not the engine's domain name
    assert (entry.reported_image, entry.managed) == ("registry.example/web:2", True)


@pytest.mark.parametrize("manage", [Manage.LABELLED, Manage.ALL])
async def test_labels_from_the_image_are_not_ours_in_the_inventory(
    engine: FakeEngine, manage: Manage
) -> None:
    parsed = parse_component(component("web", image="registry.example/web:2"))
    labels = encode_labels(parsed, DOMAIN)
    engine.add_image("img:9", labels=labels)
    web = engine.add_container("web", dataclasses.replace(spec_of(), image="img:9"), labels)
    entry = inventory_entry(await engine.inspect_container(web), settings(manage=manage))
    if manage is Manage.LABELLED:
        assert entry is None  # not this domain's: not reported
    else:
        assert entry is not None
        assert entry.reported_image == "img:9"


async def test_our_container_with_unreadable_labels_is_still_ours(engine: FakeEngine) -> None:
    parsed = parse_component(component("web", image="img:1"))
    labels = encode_labels(parsed, DOMAIN) | {LABEL_SPEC: "{not json"}
    web = engine.add_container("web", parsed.spec, labels)
    entry = inventory_entry(await engine.inspect_container(web), settings())
    assert entry is not None
    assert (entry.managed, entry.reported_image) == (True, "img:1")
