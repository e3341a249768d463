"""The agent: MQTT messages in, update operations, feedback and current state out.

Wiring only; the decisions live in `cua.update.manager.UpdateManager`, and the agent's
`cua.current_state.CurrentStateReader` reads the current state. Topics, QoS and retain flags
are Kanto's (spec §1.2): the three request topics are subscribed with QoS 1, feedback goes
out QoS 1 not retained, the current state QoS 1 retained. The current state is published on
every (re)connect (`initial-current-state-<ms>`, spec §5.5), on `currentstate/get` (with the
request's activityId) and, unlike Kanto (D10), whenever the engine reports a container
change (debounced, activityId `""`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from cua.api.envelope import MessageError, decode, encode, now_ms
from cua.api.models import (
    CommandType,
    DesiredState,
    DesiredStateCommand,
    DesiredStateFeedback,
    Inventory,
)
from cua.api.topics import Topics
from cua.backoff import Backoff
from cua.config import AgentConfig
from cua.current_state import CurrentStateReader
from cua.engine.base import Engine
from cua.mqtt import MqttConnection, OutgoingKind
from cua.systemd import notify
from cua.update.journal import Journal
from cua.update.manager import UpdateManager

__all__ = ["Agent", "initial_state_activity_id"]

log = logging.getLogger(__name__)

CHANGE_DEBOUNCE = 0.5  # seconds: one current state for a burst of container events
FLUSH_TIMEOUT = 5.0  # seconds to send owed messages at stop while connected


def initial_state_activity_id() -> str:
    return f"initial-current-state-{now_ms()}"


def _readable_activity_id(raw: bytes) -> str | None:
    """The activityId of a message whose payload does not matter (currentstate/get)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    activity_id = data.get("activityId", "")
    if activity_id is None:
        return ""
    return activity_id if isinstance(activity_id, str) else None


class Agent:
    """One agent for one domain. `run()` until the stop event is set.

    It is the `FeedbackPublisher` of its update manager: feedback is queued on the MQTT
    connection, so it survives a broker outage (bounded queue, spec D2).
    """

    def __init__(
        self,
        config: AgentConfig,
        engine: Engine,
        *,
        journal: Journal | None = None,
        change_debounce: float = CHANGE_DEBOUNCE,
    ) -> None:
        """`journal`: the operation journal in the state directory (`cua run` passes it)."""
        self.config = config
        self.engine = engine
        self.topics = Topics.for_domain(config.domain)
        self.manager = UpdateManager(engine, self, config.update, journal)
        self.state_reader = CurrentStateReader(engine, config.update)
        self.connection = MqttConnection(
            config.mqtt,
            self.topics.subscriptions,
            on_message=self._on_message,
            on_connect=self._on_connect,
        )
        self._debounce = change_debounce
        self._state_requests: asyncio.Queue[str] = asyncio.Queue()
        self._changed = asyncio.Event()
        # One current state built and published at a time: a reply built from engine reads
        # taken before a change must not be published after the state showing the change
        # (the last one published is the retained one).
        self._state_lock = asyncio.Lock()
        self._last_state: dict[str, Any] | None = None
        self._accepting = True

    # --- FeedbackPublisher -----------------------------------------------------------------

    async def publish_feedback(self, activity_id: str, feedback: DesiredStateFeedback) -> None:
        status = feedback.status.value if feedback.status else "-"
        log.info("feedback %s: %s", activity_id or '""', status)
        self.connection.publish(
            self.topics.desired_state_feedback,
            encode(activity_id, feedback),
            qos=1,
            retain=False,
            kind=OutgoingKind.FEEDBACK,
        )

    # --- life cycle --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then stop cleanly: the operation's engine call in
        progress completes, owed feedback is sent, MQTT disconnects cleanly."""
        log.info(
            "agent for domain %r (topics %s/...) in %s mode, broker %s",
            self.config.domain,
            self.topics.prefix,
            self.config.update.mode.value,
            self.config.mqtt.broker,
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(self.manager.run(), name="update-manager")
            group.create_task(self.connection.run(), name="mqtt")
            helpers = [
                group.create_task(self._serve_state_requests(), name="current-state"),
                group.create_task(self._publish_changes(), name="current-state-changes"),
                group.create_task(self._watch_engine_events(), name="engine-events"),
                group.create_task(self._notify_ready(), name="sd-notify"),
            ]
            await stop.wait()
            log.info("stopping: finishing the engine call in progress and owed feedback")
            notify("STOPPING=1")
            self._accepting = False
            for task in helpers:
                task.cancel()
            await self.manager.stop()
            await self.connection.stop(FLUSH_TIMEOUT)
        log.info("stopped")

    async def _notify_ready(self) -> None:
        # Ready once the first connect attempt has ended, connected or not: a broker that is
        # down is retried forever (D2), so it must not hold up systemd (boot waits for a
        # `Type=notify` unit, and kills it after TimeoutStartSec).
        await self.connection.wait_first_attempt()
        if notify("READY=1"):
            log.info("told systemd the agent is ready")

    async def _on_connect(self) -> None:
        # Kanto reports the current state on every connect, with a fresh activityId (§5.5).
        self._state_requests.put_nowait(initial_state_activity_id())

    # --- incoming ------------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        if not self._accepting:
            log.info("stopping: ignored a message on %s", topic)
            return
        if topic == self.topics.desired_state:
            self._on_desired_state(payload)
        elif topic == self.topics.desired_state_command:
            self._on_command(payload)
        elif topic == self.topics.current_state_get:
            activity_id = _readable_activity_id(payload)
            if activity_id is None:
                log.warning("ignored a current state request on %s: not a JSON envelope", topic)
                return
            log.info("current state requested (activityId %r)", activity_id)
            self._state_requests.put_nowait(activity_id)
        else:
            log.debug("ignored a message on unexpected topic %s", topic)

    def _on_desired_state(self, payload: bytes) -> None:
        try:
            envelope = decode(payload, DesiredState, "desired state")
        except MessageError as exc:
            if exc.activity_id is None:
                log.warning(
                    "ignored a desired state message without a readable activityId: %s", exc
                )
                return
            log.warning("desired state %r is invalid: %s", exc.activity_id, exc)
            self.manager.report_invalid(exc.activity_id, str(exc))
            return
        log.info("desired state %r received", envelope.activity_id)
        # A `null` payload decodes into the zero desired state, as in Go: no domain, which
        # identification rejects with Kanto's text.
        self.manager.submit_desired_state(envelope.activity_id, envelope.payload or DesiredState())

    def _on_command(self, payload: bytes) -> None:
        try:
            envelope = decode(payload, DesiredStateCommand, "desired state command")
        except MessageError as exc:
            # Kanto drops a command it cannot decode. When its activityId and command name
            # can be read, we answer that command's failure status with what is wrong.
            command = _readable_command(payload)
            if exc.activity_id is not None and command is not None:
                log.warning("invalid %s command (activityId %r): %s", command, exc.activity_id, exc)
                self.manager.report_invalid_command(exc.activity_id, command, str(exc))
                return
            where = f" (activityId {exc.activity_id!r})" if exc.activity_id is not None else ""
            log.warning("ignored a desired state command%s: %s", where, exc)
            return
        if envelope.payload is None:
            log.warning(
                "ignored a desired state command without payload (activityId %r)",
                envelope.activity_id,
            )
            return
        log.info(
            "command %s (baseline %r) for %r received",
            envelope.payload.command or '""',
            envelope.payload.baseline,
            envelope.activity_id,
        )
        self.manager.submit_command(envelope.activity_id, envelope.payload)

    # --- current state ---------------------------------------------------------------------------

    async def _current_state(self) -> Inventory:
        return await self.state_reader.read()

    def _publish_state(self, activity_id: str, inventory: Inventory) -> None:
        self._last_state = inventory.to_wire()
        self.connection.publish(
            self.topics.current_state,
            encode(activity_id, inventory),
            qos=1,
            retain=True,
            kind=OutgoingKind.OTHER,
        )

    async def _serve_state_requests(self) -> None:
        while True:
            activity_id = await self._state_requests.get()
            async with self._state_lock:
                try:
                    inventory = await self._current_state()
                except Exception:  # a bug here must not stop the agent; the next request retries
                    log.exception("cannot build the current state for %r", activity_id)
                    continue
                self._publish_state(activity_id, inventory)
            log.info("current state published (activityId %r)", activity_id)

    async def _publish_changes(self) -> None:
        """Debounced: one current state per burst of container events, only if it changed."""
        while True:
            await self._changed.wait()
            await asyncio.sleep(self._debounce)
            async with self._state_lock:
                self._changed.clear()
                try:
                    inventory = await self._current_state()
                except Exception:
                    log.exception("cannot build the current state after container changes")
                    continue
                if inventory.to_wire() == self._last_state:
                    continue
                self._publish_state("", inventory)
            log.info("current state published after container changes")

    async def _watch_engine_events(self) -> None:
        """Follow the engine's events; survive the engine going away and coming back."""
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                async for _event in self.engine.events():
                    backoff.reset()
                    self._changed.set()
                log.info("engine event stream ended; reopening")
            except Exception as exc:  # any engine failure: keep watching, never crash
                log.warning("engine event stream failed: %s", exc)
            await asyncio.sleep(backoff.next_delay())
            # Changes may have happened while the stream was down.
            self._changed.set()


def open_engine(config: AgentConfig) -> Engine:
    """The real engine for this configuration (Docker Engine API)."""
    from cua.engine.docker import DockerEngine

    return DockerEngine(
        config.engine_url or None,
        mirrors=config.registry_mirrors,
        credentials=config.registries,
    )


def _readable_command(raw: bytes) -> CommandType | None:
    """The command name of a command message that failed to decode, if it is a known one."""
    try:
        data = json.loads(raw)
        name = data["payload"]["command"]
        return CommandType(name)
    except (ValueError, TypeError, KeyError):
        return None
