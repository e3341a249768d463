"""Two teams on one device (our-behaviour "Containers that the agent owns"): two agents of
two domains on one dockerd, as `python -m cua run` subprocesses, and the tools: neither
touches nor reports the other's containers, nor unlabelled ones, nor ones whose ownership
labels come from their image."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cua.api.envelope import go_json
from cua.containers.labels import LABEL_DOMAIN, LABEL_MANAGED
from cua.containers.parse import parse_component
from cua.containers.state import ContainerStatus
from cua.engine.base import ensure_image
from cua.engine.docker import DockerEngine
from cua_dev.images import ImageFactory
from cua_dev.stack import LocalStack
from tests.builders import component
from tests.integration.test_agent import (
    FINAL,
    agent_for,
    containers,
    cua,
    desired_state,
    probe_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images(image_factory: ImageFactory, app_images: dict[str, str]) -> dict[str, str]:
    return {
        "v1": app_images["v1"],
        # An image labelled like the containers of domain alpha (Docker copies the labels
        # onto every container made from it).
        "lookalike": image_factory(
            "domains/lookalike",
            "v1",
            marker="lookalike",
            labels={LABEL_MANAGED: "true", LABEL_DOMAIN: "alpha"},
        ),
    }


async def unmanaged(engine: DockerEngine, name: str, image: str, env: str) -> str:
    """A container someone else runs on the device (not made by any agent)."""
    async for _ in ensure_image(engine, image):
        pass
    parsed = parse_component(component(name, image=image, env=env))
    container = await engine.create_container(name, parsed.spec, {})
    await engine.start_container(container)
    return container


def node_ids(state: dict[str, object]) -> list[str]:
    return [node["id"] for node in state["softwareNodes"]]  # type: ignore[index, attr-defined]


async def test_two_agents_of_two_domains_on_one_engine(
    engine: DockerEngine, stack: LocalStack, tmp_path: Path, images: dict[str, str]
) -> None:
    v1 = images["v1"]
    db = await unmanaged(engine, "db", v1, "POSTGRES_PASSWORD=db-s3cr3t")
    lookalike = await unmanaged(engine, "lookalike", images["lookalike"], "X=1")
    with (
        agent_for(stack, tmp_path / "a", "alpha") as agent_a,
        agent_for(stack, tmp_path / "b", "beta") as agent_b,
    ):
        async with probe_for(stack, "alpha") as alpha, probe_for(stack, "beta") as beta:
            await alpha.state("initial")
            await beta.state("initial")
            alpha.desired(
                "a-1",
                desired_state("alpha", component("web", image=v1, env="ALPHA_TOKEN=alpha-s3cr3t")),
            )
            beta.desired(
                "b-1",
                desired_state("beta", component("app", image=v1, env="BETA_TOKEN=beta-s3cr3t")),
            )
            assert (await alpha.until("a-1", FINAL))[-1]["status"] == "COMPLETED"
            assert (await beta.until("b-1", FINAL))[-1]["status"] == "COMPLETED"
            before = await containers(engine)
            assert set(before) == {"web", "app", "db", "lookalike"}

            # Each reports only its own containers: not the other's, not the unmanaged
            # database (its password), not the one labelled by its image.
            for probe, activity, own, secret in (
                (alpha, "get-a", "alpha:web", "alpha-s3cr3t"),
                (beta, "get-b", "beta:app", "beta-s3cr3t"),
            ):
                probe.send(probe.topics.current_state_get, {"activityId": activity})
                state = await probe.state(activity)
                assert node_ids(state)[1:] == [own]
                raw = json.dumps(state)
                assert "db-s3cr3t" not in raw
                assert secret in raw  # its own env is reported, as Kanto

            # An empty desired state of alpha destroys alpha's container only.
            alpha.desired("a-2", desired_state("alpha"))
            messages = await alpha.until("a-2", FINAL)
            assert messages[-1]["status"] == "COMPLETED"
            assert [a["component"]["id"] for a in messages[1]["actions"]] == ["alpha:web"]
            after = await containers(engine)
            assert set(after) == {"app", "db", "lookalike"}
            assert after["app"][:2] == (before["app"][0], ContainerStatus.RUNNING)
            assert after["db"][0] == db
            assert after["lookalike"][0] == lookalike

            # A name held by the other domain's container: IDENTIFICATION_FAILED naming it.
            alpha.desired("a-3", desired_state("alpha", component("app", image=v1)))
            failed = await alpha.until("a-3", FINAL)
            assert [m["status"] for m in failed] == ["IDENTIFYING", "IDENTIFICATION_FAILED"]
            assert 'domain "beta"' in failed[-1]["message"]
            alpha.desired("a-4", desired_state("alpha", component("lookalike", image=v1)))
            failed = await alpha.until("a-4", FINAL)
            assert "not managed by this agent nor by any other" in failed[-1]["message"]
            assert await containers(engine) == after

            # Beta's empty desired state: beta's app goes, nothing else.
            beta.desired("b-2", desired_state("beta"))
            assert (await beta.until("b-2", FINAL))[-1]["status"] == "COMPLETED"
            assert set(await containers(engine)) == {"db", "lookalike"}
    for agent in (agent_a, agent_b):
        assert "db-s3cr3t" not in agent.log()


async def test_tools_of_a_third_domain_leave_the_others_alone(
    engine: DockerEngine, stack: LocalStack, images: dict[str, str]
) -> None:
    v1 = images["v1"]
    for domain, name in (("alpha", "web"), ("beta", "app")):
        one = go_json(desired_state(domain, component(name, image=v1, env="T=s3cr3t")))
        applied = await asyncio.to_thread(
            cua, "apply", "-", "--engine", stack.docker_host, "--domain", domain, stdin=one
        )
        assert applied.returncode == 0, applied.stderr
    before = await containers(engine)
    flags = ("--engine", stack.docker_host, "--domain", "gamma")

    empty = go_json(desired_state("gamma"))
    plan = await asyncio.to_thread(cua, "plan", "-", "--json", *flags, stdin=empty)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["actions"] == []
    applied = await asyncio.to_thread(cua, "apply", "-", *flags, stdin=empty)
    assert applied.returncode == 0, applied.stderr
    taken = go_json(desired_state("gamma", component("web", image=v1)))
    applied = await asyncio.to_thread(cua, "apply", "-", *flags, stdin=taken)
    assert applied.returncode == 1
    assert 'domain "alpha"' in applied.stdout
    assert await containers(engine) == before

    state = await asyncio.to_thread(cua, "state", "--json", *flags)
    assert state.returncode == 0, state.stderr
    assert node_ids(json.loads(state.stdout)) == ["gamma-update-agent"]
    state = await asyncio.to_thread(
        cua, "state", "--json", "--engine", stack.docker_host, "--domain", "beta"
    )
    assert node_ids(json.loads(state.stdout)) == ["beta-update-agent", "beta:app"]
    # manage: all is Kanto's: every container is reported (and would be destroyed).
    state = await asyncio.to_thread(cua, "state", "--json", *flags, "--manage", "all")
    assert node_ids(json.loads(state.stdout))[1:] == ["gamma:app", "gamma:web"]
    plan = await asyncio.to_thread(
        cua, "plan", "-", "--json", *flags, "--manage", "all", stdin=empty
    )
    destroyed = [a["component"]["id"] for a in json.loads(plan.stdout)["actions"]]
    assert destroyed == ["gamma:app", "gamma:web"]
