"""Activation means running: the watch after a start, on the fake engine."""

from __future__ import annotations

import pytest

from cua.api.models import ComponentWithConfig
from cua.containers.parse import parse_component
from cua.containers.state import ContainerStatus
from cua.testing.fake_engine import FakeEngine
from cua.testing.feedback import RecordingPublisher
from cua.update.activation import ActivationWatch, hide_values, watch_activation
from cua.update.manager import UpdateManager
from tests.builders import (
    M_RB_RECREATE,
    M_STARTED,
    act,
    add_managed,
    component,
    desired,
    settings,
    status_of,
)

pytestmark = pytest.mark.unit

SHORT = {"activation_window": 0.01, "activation_timeout": 0.2}


async def apply(
    engine: FakeEngine, pub: RecordingPublisher, *components: ComponentWithConfig
) -> str:
    manager = UpdateManager(engine, pub, settings(**SHORT))
    return str(await manager.apply("act", desired(*components)))


def failure(pub: RecordingPublisher) -> dict[str, object]:
    """The failed action of the ACTIVATION_FAILURE feedback."""
    message = next(m for m in pub.wire("act") if m["status"] == "ACTIVATION_FAILURE")
    return next(a for a in message["actions"] if a["status"] == "ACTIVATION_FAILURE")


async def test_exit_at_once_fails_activation_with_code_and_log_and_rolls_back(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    old = add_managed(engine, "app", image="img:1")
    engine.behave_after_start(
        "img:2", exit_code=3, logs=("starting", "token s3cr3t-value rejected", "bye")
    )
    status = await apply(engine, pub, component("app", image="img:2", env="TOKEN=s3cr3t-value"))
    assert status == "INCOMPLETE"
    assert failure(pub)["message"] == (
        "container app exited with code 3 within 0.01s of its start; "
        "last log lines: starting | token *** rejected | bye"
    )
    statuses = [m["status"] for m in pub.wire("act")]
    assert statuses[-4:] == ["ROLLBACK", "ROLLBACK_SUCCESS", "CLEANUP_SUCCESS", "INCOMPLETE"]
    rollback = next(m for m in pub.wire("act") if m["status"] == "ROLLBACK_SUCCESS")
    assert rollback["actions"][0]["message"] == M_RB_RECREATE
    assert engine.container_names() == ["app"]
    assert (await engine.inspect_container("app")).id == old
    assert status_of(engine, "app") is ContainerStatus.RUNNING


async def test_restarts_within_the_window_fail(engine: FakeEngine, pub: RecordingPublisher) -> None:
    engine.behave_after_start("img:1", restarts=2)
    assert await apply(engine, pub, component("loop", image="img:1")) == "INCOMPLETE"
    assert failure(pub)["message"] == (
        "container loop was restarted 2 times by its restart policy within 0.01s of its "
        "start; no log output"
    )
    assert engine.container_names() == []  # the new container was removed by rollback


async def test_unhealthy_fails(engine: FakeEngine, pub: RecordingPublisher) -> None:
    engine.behave_after_start("img:1", health="unhealthy", logs=("db down",))
    assert await apply(engine, pub, component("sick", image="img:1")) == "INCOMPLETE"
    assert failure(pub)["message"] == "container sick is unhealthy; last log lines: db down"


async def test_healthcheck_that_never_settles_times_out(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.behave_after_start("img:1", health="starting")
    assert await apply(engine, pub, component("slow", image="img:1")) == "INCOMPLETE"
    assert failure(pub)["message"] == (
        "container slow did not become healthy within 0.2s of its start; no log output"
    )


async def test_healthy_and_running_succeeds(engine: FakeEngine, pub: RecordingPublisher) -> None:
    engine.behave_after_start("img:1", health="healthy")
    assert await apply(engine, pub, component("fine", image="img:1")) == "COMPLETED"
    activated = next(m for m in pub.wire("act") if m["status"] == "ACTIVATION_SUCCESS")
    assert activated["actions"] == [act("fine", "ACTIVATION_SUCCESS", M_STARTED)]


async def test_one_shot_job_that_exits_0_succeeds(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.behave_after_start("img:1", exit_code=0)
    job = component("job", image="img:1", restartPolicy="no")
    assert await apply(engine, pub, job) == "COMPLETED"
    assert status_of(engine, "job") is ContainerStatus.EXITED


async def test_exit_0_of_a_container_meant_to_keep_running_fails(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    engine.behave_after_start("img:1", exit_code=0)
    assert await apply(engine, pub, component("svc", image="img:1")) == "INCOMPLETE"
    assert "exited with code 0" in str(failure(pub)["message"])
    assert "restart policy keeps it running" in str(failure(pub)["message"])


async def test_reapplying_over_an_exited_container_reports_the_truth(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    add_managed(engine, "app", image="img:1", running=False)
    engine.behave_after_start("app", exit_code=2, logs=("config missing",))
    assert await apply(engine, pub, component("app", image="img:1")) == "INCOMPLETE"
    assert failure(pub)["message"] == (
        "container app exited with code 2 within 0.01s of its start; last log lines: config missing"
    )


async def test_every_container_is_started_before_the_first_is_read_back(
    engine: FakeEngine, pub: RecordingPublisher
) -> None:
    """Started and watched together: the window is paid once per update."""
    names = [f"c{i}" for i in range(12)]
    status = await apply(engine, pub, *(component(n, image="img:1") for n in names))
    assert status == "COMPLETED"
    methods = [
        c.method for c in engine.calls if c.method in ("start_container", "inspect_container")
    ]
    first_read = methods.index("inspect_container")
    assert methods[:first_read] == ["start_container"] * len(names)


async def test_a_zero_window_is_kantos_success_at_start() -> None:
    engine = FakeEngine()
    engine.add_image("img:1")
    engine.behave_after_start("img:1", exit_code=1)
    spec = parse_component(component("x1", image="img:1")).spec
    container = await engine.create_container("x1", spec, {})
    await engine.start_container(container)
    engine.calls.clear()
    await watch_activation(engine, container, "x1", ActivationWatch(window=0, timeout=60))
    assert engine.calls == []


def test_hide_values_hides_env_values_longest_first_and_keeps_short_ones() -> None:
    env = ["A=secret", "B=secretive", "C=on", "D="]
    assert hide_values("secretive secret on", env) == "*** *** on"


async def test_a_pending_healthcheck_wait_ends_at_the_checkpoint() -> None:
    """An agent that stops does not wait out `activation_timeout`."""
    engine = FakeEngine()
    engine.add_image("img:1")
    engine.behave_after_start("img:1", health="starting")
    spec = parse_component(component("x1", image="img:1")).spec
    container = await engine.create_container("x1", spec, {})
    await engine.start_container(container)

    class Stopping(Exception):
        pass

    def checkpoint() -> None:
        raise Stopping

    watch = ActivationWatch(window=0.01, timeout=60)
    with pytest.raises(Stopping):
        await watch_activation(engine, container, "x1", watch, checkpoint)
