"""Update operations end to end on the private dockerd and registry (no fakes)."""

from __future__ import annotations

import asyncio
import functools
import socket
from pathlib import Path
from typing import Any

import pytest

from cua.api.models import ComponentWithConfig
from cua.containers.parse import parse_component
from cua.containers.spec import RestartPolicyType, size_text
from cua.containers.state import ContainerStatus
from cua.engine.docker import DockerEngine
from cua.settings import Manage, UpdateSettings
from cua.testing.feedback import RecordingPublisher, collapse_progress
from cua.update.journal import Journal, journal_for
from cua.update.manager import UpdateManager
from cua.update.operation import Operation
from cua.update.recovery import recover
from cua_dev.images import LONG_RUNNING_CMD, Healthcheck, ImageFactory
from cua_dev.netns import NetNamespace
from cua_dev.processes import free_ports
from cua_dev.stack import LocalStack
from cua_dev.unixhttp import docker_exec, engine_json
from tests.builders import NOTHING_TO_DO, component, desired, standalone_statuses

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def images(image_factory: ImageFactory) -> dict[str, str]:
    return {
        "v1": image_factory("e2e/app", "v1", marker="v1"),
        "v2": image_factory("e2e/app", "v2", marker="v2"),
    }


LONG_RUNNING = LONG_RUNNING_CMD[2]  # the script of the test images' default command
WINDOW = 0.5  # a short activation window keeps the suite fast (the default is 3 s)


def settings(**overrides: Any) -> UpdateSettings:
    base = {"stop_grace_period": 1.0, "progress_interval": 0.2, "activation_window": WINDOW}
    return UpdateSettings(**{**base, **overrides})


async def by_name(engine: DockerEngine) -> dict[str, ContainerStatus]:
    return {c.name: c.status for c in await engine.list_containers()}


async def test_cycle_with_all_five_action_kinds(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    setup = UpdateManager(engine, RecordingPublisher(), settings())
    first = desired(
        component("recr", image=images["v1"]),
        component("upd", image=images["v1"], restartPolicy="no"),
        component("chk", image=images["v1"]),
        component("gone", image=images["v1"]),
    )
    assert await setup.apply("setup", first) == "COMPLETED"
    await engine.stop_container("chk", 1.0)
    old_recr = (await engine.inspect_container("recr")).id

    pub = RecordingPublisher()
    second = desired(
        component("newc", image=images["v1"]),
        component("recr", image=images["v2"]),
        component("upd", image=images["v1"], restartPolicy="always"),
        component("chk", image=images["v1"]),
    )
    plan = await UpdateManager(engine, pub, settings()).plan(second)
    assert [(a.name, str(a.kind)) for a in plan.actions] == [
        ("newc", "CREATE"),
        ("recr", "RECREATE"),
        ("upd", "UPDATE"),
        ("chk", "CHECK"),
        ("gone", "DESTROY"),
    ]
    status = await UpdateManager(engine, pub, settings()).apply("cycle", second)
    assert status == "COMPLETED"
    assert [m["status"] for m in collapse_progress(pub.wire("cycle"))] == standalone_statuses(
        downloading=2, updating=3, activating=4
    )
    final = pub.wire("cycle")[-1]["actions"]
    assert [a["status"] for a in final] == [
        "ACTIVATION_SUCCESS", "ACTIVATION_SUCCESS", "ACTIVATION_SUCCESS", "ACTIVATION_SUCCESS",
        "REMOVAL_SUCCESS",
    ]  # fmt: skip
    assert await by_name(engine) == {
        "newc": ContainerStatus.RUNNING,
        "recr": ContainerStatus.RUNNING,
        "upd": ContainerStatus.RUNNING,
        "chk": ContainerStatus.RUNNING,
    }
    recr = await engine.inspect_container("recr")
    assert recr.id != old_recr
    assert recr.spec.image == images["v2"]
    assert (await engine.inspect_container("upd")).spec.restart.type is RestartPolicyType.ALWAYS
    # The same desired state again: all CHECK (no spurious UPDATE, D12).
    again = await UpdateManager(engine, pub, settings()).plan(second)
    assert [str(a.kind) for a in again.actions] == ["CHECK"] * 4


async def test_unmanaged_and_system_containers(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    for name in ("foreign", "sys-x"):
        spec = parse_component(component(name, image=images["v1"])).spec
        async for _ in engine.pull_image(images["v1"]):
            pass
        await engine.create_container(name, spec, {})
        await engine.start_container(name)
    pub = RecordingPublisher()
    labelled = UpdateManager(engine, pub, settings(system_containers=("sys-x",)))
    assert await labelled.apply("L", desired()) == "COMPLETED"
    assert pub.statuses("L") == NOTHING_TO_DO
    assert set(await by_name(engine)) == {"foreign", "sys-x"}

    everything = UpdateManager(
        engine, pub, settings(manage=Manage.ALL, system_containers=("sys-x",))
    )
    assert await everything.apply("A", desired()) == "COMPLETED"
    assert [a["component"]["id"] for a in pub.wire("A")[1]["actions"]] == ["containers:foreign"]
    assert await by_name(engine) == {"sys-x": ContainerStatus.RUNNING}


async def test_start_failure_in_standalone_restores_the_old_container(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    assert (
        await manager.apply("setup", desired(component("web", image=images["v1"]))) == "COMPLETED"
    )
    old_id = (await engine.inspect_container("web")).id
    pub = RecordingPublisher()
    failing = desired(component("web", image=images["v2"], cmd="/no/such/entrypoint"))
    status = await UpdateManager(engine, pub, settings()).apply("fail", failing)
    assert status == "INCOMPLETE"
    statuses = [m["status"] for m in collapse_progress(pub.wire("fail"))]
    assert statuses[-5:] == [
        "ACTIVATION_FAILURE", "ROLLBACK", "ROLLBACK_SUCCESS", "CLEANUP_SUCCESS", "INCOMPLETE",
    ]  # fmt: skip
    failure = next(m for m in pub.wire("fail") if m["status"] == "ACTIVATION_FAILURE")
    assert failure["actions"][0]["status"] == "ACTIVATION_FAILURE"
    assert failure["actions"][0]["message"]
    assert await by_name(engine) == {"web": ContainerStatus.RUNNING}
    assert (await engine.inspect_container("web")).id == old_id


async def test_pull_failure_stops_nothing(
    engine: DockerEngine, images: dict[str, str], registry: str
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    assert (
        await manager.apply("setup", desired(component("web", image=images["v1"]))) == "COMPLETED"
    )
    started = (await engine.inspect_container("web")).state.started_at
    pub = RecordingPublisher()
    missing = desired(component("web", image=f"{registry}/e2e/missing:1"))
    assert await UpdateManager(engine, pub, settings()).apply("pull", missing) == "INCOMPLETE"
    wire = collapse_progress(pub.wire("pull"))
    assert [m["status"] for m in wire] == standalone_statuses(fails="DOWNLOAD")
    assert wire[3]["actions"][0]["status"] == "DOWNLOAD_FAILURE"
    assert "missing" in wire[3]["actions"][0]["message"]
    details = await engine.inspect_container("web")
    assert details.state.status is ContainerStatus.RUNNING
    assert details.state.started_at == started  # never stopped
    assert set(await by_name(engine)) == {"web"}


async def test_malformed_entries_warn_or_in_strict_mode_fail_touching_nothing(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    assert (
        await manager.apply("setup", desired(component("web", image=images["v1"]))) == "COMPLETED"
    )
    before = {c.id: c.status for c in await engine.list_containers()}
    leda_port = "localhost:55555:30555-30555/tcp"
    changed = desired(
        component("web", image=images["v2"], port=leda_port), component("more", image=images["v1"])
    )

    strict = RecordingPublisher()
    status = await UpdateManager(engine, strict, settings(strict=True)).apply("strict", changed)
    assert status == "IDENTIFICATION_FAILED"
    assert strict.wire("strict") == [
        {
            "status": "IDENTIFICATION_FAILED",
            "message": "cannot convert desired state components to container configurations: "
            f'invalid configuration for container web: invalid port "{leda_port}": '
            'the host IP "localhost" is not an IP address',
        }
    ]
    assert {c.id: c.status for c in await engine.list_containers()} == before

    lenient = RecordingPublisher()
    assert await UpdateManager(engine, lenient, settings()).apply("lenient", changed) == (
        "COMPLETED"
    )
    identified = lenient.wire("lenient")[1]
    assert identified["status"] == "IDENTIFIED"
    assert identified["message"] == (
        f'container web: port "{leda_port}" ignored: the host IP "localhost" is not an IP address'
    )
    assert (await engine.inspect_container("web")).spec.ports == ()


async def test_d12_dropping_a_memory_limit_recreates_once_then_checks(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    limited = desired(component("web", image=images["v1"], memory="64M", memoryReservation="32M"))
    assert await manager.apply("limited", limited) == "COMPLETED"
    unlimited = desired(component("web", image=images["v1"]))
    plan = await manager.plan(unlimited)
    assert [(a.kind, a.differences) for a in plan.actions] == [
        ("RECREATE", ("memory", "memoryReservation"))
    ]
    assert await manager.apply("unlimited", unlimited) == "COMPLETED"
    assert (await engine.inspect_container("web")).spec.resources is None
    assert [a.kind for a in (await manager.plan(unlimited)).actions] == ["CHECK"]


async def test_crash_recovery_after_activation(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    assert (
        await manager.apply("setup", desired(component("web", image=images["v1"]))) == "COMPLETED"
    )
    old_id = (await engine.inspect_container("web")).id
    pub = RecordingPublisher()
    plan = await manager.plan(desired(component("web", image=images["v2"])))
    operation = Operation("crash", plan, engine, pub, settings(), journal=Journal(None))
    for command in ("DOWNLOAD", "UPDATE", "ACTIVATE"):
        await operation.command(command, "")
    assert set(await by_name(engine)) == {"web", "web.cua-old"}
    # The agent dies here (no CLEANUP); at the next start recovery puts the old one back.
    done = await recover(engine)
    assert done
    assert await by_name(engine) == {"web": ContainerStatus.RUNNING}
    assert (await engine.inspect_container("web")).id == old_id


async def test_crash_recovery_from_the_journal(
    engine: DockerEngine, images: dict[str, str], tmp_path: Path
) -> None:
    """What names do not show (a DESTROY's stop, an UPDATE's runtime change) is undone
    from the operation's journal at the next start."""
    manager = UpdateManager(engine, RecordingPublisher(), settings())
    first = desired(
        component("upd", image=images["v1"], restartPolicy="no", memory="100M"),
        component("gone", image=images["v1"]),
    )
    assert await manager.apply("setup", first) == "COMPLETED"
    journal = journal_for(tmp_path, "containers")
    plan = await manager.plan(
        desired(component("upd", image=images["v1"], restartPolicy="always", memory="200M"))
    )
    assert [str(a.kind) for a in plan.actions] == ["UPDATE", "DESTROY"]
    operation = Operation("crash", plan, engine, RecordingPublisher(), settings(), journal=journal)
    for command in ("DOWNLOAD", "UPDATE"):
        await operation.command(command, "")
    assert await by_name(engine) == {"upd": ContainerStatus.RUNNING, "gone": ContainerStatus.EXITED}
    assert (await engine.inspect_container("upd")).spec.restart.type is RestartPolicyType.ALWAYS
    # The agent dies here (no CLEANUP); the next start recovers from the journal.
    assert journal.path is not None
    assert journal.path.exists()
    done = await recover(engine, journal)
    assert sorted(done) == [
        "gone: container stopped by the operation started again",
        "upd: previous restart policy and memory limits restored",
    ]
    running = ContainerStatus.RUNNING
    assert await by_name(engine) == {"upd": running, "gone": running}
    spec = (await engine.inspect_container("upd")).spec
    assert spec.restart.type is RestartPolicyType.NO
    assert spec.resources is not None
    assert size_text(spec.resources.memory) == "100M"
    # Left in the journal: only the interrupted activity's final status, owed until the
    # broker has it (the update manager publishes it).
    [owed] = journal.read()
    assert (owed.activity, owed.step, owed.status, owed.interrupted) == (
        "crash",
        "finished",
        "INCOMPLETE",
        True,
    )


# --- activation means running ------------------------------------------------------------


def shell(
    name: str, image: str, script: str, *, ports: tuple[str, ...] = (), **config: str
) -> ComponentWithConfig:
    """A component running `sh -c script` (Kanto's multi-valued `cmd`), with `port`s."""
    pairs = [("image", image), ("cmd", "sh"), ("cmd", "-c"), ("cmd", script)]
    pairs += [("port", port) for port in ports]
    return component(name, "1", pairs=pairs, **config)


def activation_failure(pub: RecordingPublisher, activity: str) -> str:
    message = next(m for m in pub.wire(activity) if m["status"] == "ACTIVATION_FAILURE")
    failed = next(a for a in message["actions"] if a["status"] == "ACTIVATION_FAILURE")
    return str(failed["message"])


async def test_exit_at_once_fails_activation_and_restores_the_old_container(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    setup = UpdateManager(engine, RecordingPublisher(), settings())
    assert await setup.apply("setup", desired(component("app", image=images["v1"]))) == "COMPLETED"
    old_id = (await engine.inspect_container("app")).id
    script = 'echo starting; echo "using token $TOKEN"; exit 3'
    failing = shell("app", images["v2"], script, env="TOKEN=s3cr3t-token", restartPolicy="no")
    pub = RecordingPublisher()
    assert await UpdateManager(engine, pub, settings()).apply("exit", desired(failing)) == (
        "INCOMPLETE"
    )
    assert activation_failure(pub, "exit") == (
        f"container app exited with code 3 within {WINDOW:g}s of its start; "
        "last log lines: starting | using token ***"
    )
    statuses = [m["status"] for m in collapse_progress(pub.wire("exit"))]
    assert statuses[-5:] == [
        "ACTIVATION_FAILURE", "ROLLBACK", "ROLLBACK_SUCCESS", "CLEANUP_SUCCESS", "INCOMPLETE",
    ]  # fmt: skip
    assert await by_name(engine) == {"app": ContainerStatus.RUNNING}
    assert (await engine.inspect_container("app")).id == old_id


async def test_restart_loop_fails_activation(engine: DockerEngine, images: dict[str, str]) -> None:
    pub = RecordingPublisher()
    looping = shell("loop", images["v1"], "echo crash; exit 1", restartPolicy="always")
    assert await UpdateManager(engine, pub, settings()).apply("loop", desired(looping)) == (
        "INCOMPLETE"
    )
    message = activation_failure(pub, "loop")
    assert message.startswith("container loop was restarted "), message
    assert "by its restart policy within 0.5s of its start" in message
    assert "last log lines: crash" in message
    assert await by_name(engine) == {}  # the new container was removed again


async def test_one_shot_job_succeeds_and_stays_exited(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    pub = RecordingPublisher()
    job = shell("job", images["v1"], "echo done", restartPolicy="no")
    assert await UpdateManager(engine, pub, settings()).apply("job", desired(job)) == "COMPLETED"
    details = await engine.inspect_container("job")
    assert (details.state.status, details.state.exit_code) == (ContainerStatus.EXITED, 0)


async def test_reapplying_over_a_container_that_exited_reports_the_truth(
    engine: DockerEngine, images: dict[str, str]
) -> None:
    # Runs past the window the first time, then exits 3; started again it exits at once.
    script = "test -f /ran && exit 3; touch /ran; sleep 1; exit 3"
    app = shell("app", images["v1"], script, restartPolicy="no")
    first = RecordingPublisher()
    assert await UpdateManager(engine, first, settings()).apply("first", desired(app)) == (
        "COMPLETED"
    )
    async with asyncio.timeout(20):
        while (await engine.inspect_container("app")).state.running:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    again = RecordingPublisher()
    assert await UpdateManager(engine, again, settings()).apply("again", desired(app)) == (
        "INCOMPLETE"
    )
    assert activation_failure(again, "again") == (
        f"container app exited with code 3 within {WINDOW:g}s of its start; no log output"
    )


async def test_healthchecks_decide_activation(
    engine: DockerEngine, image_factory: ImageFactory
) -> None:
    sick = image_factory(
        "e2e/health", "sick", marker="sick", healthcheck=Healthcheck(("CMD", "false"), 0.2)
    )
    ready_later = image_factory(
        "e2e/health",
        "later",
        marker="later",
        cmd=("sh", "-c", f"sleep 1; touch /ready; {LONG_RUNNING}"),
        # Failures in the start period do not count: "starting" until /ready exists.
        healthcheck=Healthcheck(("CMD", "test", "-f", "/ready"), 0.2, start_period_s=10),
    )
    pub = RecordingPublisher()
    manager = UpdateManager(engine, pub, settings(activation_timeout=20))
    assert await manager.apply("sick", desired(component("sick", image=sick))) == "INCOMPLETE"
    assert activation_failure(pub, "sick") == "container sick is unhealthy; no log output"
    assert (
        await manager.apply("later", desired(component("later", image=ready_later))) == "COMPLETED"
    )
    assert (await engine.inspect_container("later")).state.health == "healthy"


# --- ports and network modes, with traffic inside the stack's namespace --------------------

HTTPD = "trap 'exit 0' TERM INT; httpd -f -p {port} -h / & wait"  # serves /marker
GET_MARKER = b"GET /marker HTTP/1.0\r\n\r\n"


def body(reply: bytes) -> bytes:
    return reply.partition(b"\r\n\r\n")[2]


async def test_every_port_form_passes_traffic_through_its_published_port(
    engine: DockerEngine, images: dict[str, str], stack: LocalStack
) -> None:
    on_loopback, anywhere, range_start, udp = free_ports(4)
    ports = (
        f"127.0.0.1:{on_loopback}:80",  # host IP
        f"{anywhere}:80/tcp",  # all addresses
        f"{range_start}-{range_start + 2}:80",  # a host port range
        f"{udp}:81/udp",
    )
    web = shell("web", images["v1"], HTTPD.format(port=80), ports=ports)
    pub = RecordingPublisher()
    assert await UpdateManager(engine, pub, settings()).apply("ports", desired(web)) == "COMPLETED"
    raw = engine_json(stack.docker_host, "GET", "/containers/web/json")
    gateway = raw["NetworkSettings"]["Gateway"]
    netns = stack.netns
    exchange = functools.partial(asyncio.to_thread, netns.exchange)

    assert body(await exchange("127.0.0.1", on_loopback, GET_MARKER)) == b"v1"
    with pytest.raises(ConnectionRefusedError):  # bound to the namespace's loopback only
        await exchange(gateway, on_loopback, GET_MARKER, deadline=0)
    for host in ("127.0.0.1", gateway):
        assert body(await exchange(host, anywhere, GET_MARKER)) == b"v1"
    bound = [int(b["HostPort"]) for b in raw["NetworkSettings"]["Ports"]["80/tcp"]]
    in_range = [port for port in bound if range_start <= port <= range_start + 2]
    assert len(in_range) == 1
    assert body(await exchange("127.0.0.1", in_range[0], GET_MARKER)) == b"v1"

    # UDP: busybox has no UDP server, so the test answers from the container's namespace.
    container_ns = NetNamespace(f"/proc/{raw['State']['Pid']}/ns/net")
    server = container_ns.new_socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = netns.new_socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind(("0.0.0.0", 81))
        server.settimeout(10)
        client.settimeout(10)

        def round_trip() -> bytes:
            client.sendto(b"ping", ("127.0.0.1", udp))
            data, peer = server.recvfrom(100)
            server.sendto(data.upper(), peer)
            return client.recvfrom(100)[0]

        assert await asyncio.to_thread(round_trip) == b"PING"
    finally:
        server.close()
        client.close()
        container_ns.close()


async def test_host_network_shares_the_namespaces_interfaces(
    engine: DockerEngine, images: dict[str, str], stack: LocalStack
) -> None:
    (port,) = free_ports(1)
    web = shell("hostweb", images["v1"], HTTPD.format(port=port), network="host")
    pub = RecordingPublisher()
    assert await UpdateManager(engine, pub, settings()).apply("host", desired(web)) == "COMPLETED"
    reply = await asyncio.to_thread(stack.netns.exchange, "127.0.0.1", port, GET_MARKER)
    assert body(reply) == b"v1"
    # It sees the namespace's own bridge, which a bridged container does not.
    code, links = docker_exec(stack.docker_host, "hostweb", ["ip", "link"])
    assert code == 0
    assert "docker0" in links


async def test_recreate_renames_while_the_engine_stops_the_old_container(
    engine: DockerEngine, image_factory: ImageFactory, tmp_path: Path
) -> None:
    """Standalone RECREATE of a container that ignores SIGTERM (its stop takes the whole
    grace period): the engine renames both containers while it stops the old one, the new
    one starts under the name, and with the journal's commit record the old one is removed
    without a `.cua-removed` rename first."""
    slow = {
        tag: image_factory("e2e/slow", tag, cmd=("sleep", "3600"), marker=f"slow {tag}")
        for tag in ("v1", "v2")
    }
    setup = UpdateManager(engine, RecordingPublisher(), settings())
    assert await setup.apply("setup", desired(component("sloth", image=slow["v1"]))) == (
        "COMPLETED"
    )
    old_id = (await engine.inspect_container("sloth")).id
    events = engine.events()
    manager = UpdateManager(
        engine, RecordingPublisher(), settings(), journal_for(tmp_path, "containers")
    )
    assert await manager.apply("A", desired(component("sloth", image=slow["v2"]))) == ("COMPLETED")
    seen: list[tuple[str, str, str]] = []
    async with asyncio.timeout(10):
        async for event in events:
            seen.append((event.raw_action, event.container_id, event.name))
            if (event.raw_action, event.container_id) == ("destroy", old_id):
                break
    await events.aclose()  # type: ignore[attr-defined]
    new = await engine.inspect_container("sloth")
    assert (new.spec.image, new.state.status) == (slow["v2"], ContainerStatus.RUNNING)
    order = [(action, name) for action, cid, name in seen if cid in (old_id, new.id)]
    renames = [(a, n) for a, n in order if a == "rename"]
    assert renames == [("rename", "sloth.cua-old"), ("rename", "sloth")]
    died = order.index(("die", "sloth.cua-old"))  # killed after the grace period
    assert order.index(("rename", "sloth")) < died < order.index(("start", "sloth"))
    assert await by_name(engine) == {"sloth": ContainerStatus.RUNNING}
    assert not (tmp_path / "journal-containers.jsonl").exists()
