"""The agent: MQTT messages in, update operations, feedback and current state out.

Wiring only; the decisions live in `cua.update.manager.UpdateManager`, and the agent's
`cua.current_state.CurrentStateReader` reads the current state. Topics, QoS and retain flags
are Kanto's (spec §1.2): the three request topics are subscribed with QoS 1, feedback goes
out QoS 1 not retained, the current state QoS 1 retained. The current state is published on
every (re)connect (`initial-current-state-<ms>`, spec §5.5), on `currentstate/get` (with the
request's activityId) and, unlike Kanto (D10), whenever the engine reports a container
change (debounced, activityId `""`).

At start, the engine is read for the first current state while the broker connection is
made, and the update manager (crash recovery, then operations) starts once the broker
acknowledged that state: importing the update machinery and recovery's engine reads do not
delay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cua.api.envelope import (
    Envelope,
    MessageError,
    PayloadT,
    decode,
    encode_feedback,
    encode_with_payload,
    go_json,
    load_json,
    now_ms,
    read_member,
)
from cua.api.extra_keys import desired_state_unknown_keys
from cua.api.models import (
    CommandType,
    DesiredState,
    DesiredStateCommand,
    DesiredStateFeedback,
    Inventory,
    StatusType,
)
from cua.api.topics import Topics
from cua.backoff import Backoff
from cua.config import AgentConfig
from cua.current_state import CurrentStateReader, EarlyRead
from cua.engine.base import Engine, EngineUnavailableError
from cua.logtext import Throttle, quoted
from cua.mqtt import MqttConnection, OutgoingKind
from cua.systemd import notify

__all__ = ["Agent", "initial_state_activity_id"]

if TYPE_CHECKING:
    from cua.update.journal import Journal
    from cua.update.manager import UpdateManager
    from cua.update.publisher import Delivered

log = logging.getLogger(__name__)

CHANGE_DEBOUNCE = 0.5  # seconds: one current state for a burst of container events
FLUSH_TIMEOUT = 5.0  # seconds to send owed messages at stop while connected
# Current state requests waiting for one engine read; more are dropped (logged).
MAX_PENDING_STATE_REQUESTS = 10_000
# The update manager (crash recovery, then operations) starts once the broker acknowledged
# the first current state, or after this many seconds (a broker that is down).
MANAGER_START_DELAY = 2.0


def initial_state_activity_id() -> str:
    return f"initial-current-state-{now_ms()}"


FAILURE_STATUSES = frozenset(
    {
        StatusType.IDENTIFICATION_FAILED,
        StatusType.INCOMPLETE,
        StatusType.INCOMPLETE_INCONSISTENT,
        StatusType.DOWNLOAD_FAILURE,
        StatusType.UPDATE_FAILURE,
        StatusType.ACTIVATION_FAILURE,
        StatusType.ROLLBACK_FAILURE,
        StatusType.CLEANUP_FAILURE,
    }
)


def failure_reason(feedback: DesiredStateFeedback) -> str:
    """Why a failure status: its message, else the messages of the actions that failed."""
    if feedback.message:
        return feedback.message
    failed = [
        f"{action.component.id if action.component else '?'}: {action.message}"
        for action in feedback.actions
        if action.status is not None and action.status.value.endswith("_FAILURE")
    ]
    return "; ".join(failed) or "see the earlier feedback of this activity"


def _readable_activity_id(raw: bytes, max_length: int) -> str | None:
    """The activityId of a message whose payload does not matter (currentstate/get):
    `""` when absent or null, None when it cannot be read (or is over its length limit)."""
    try:
        data = load_json(raw)
    except ValueError:
        activity_id = read_member(raw, ("activityId",))  # the rest may be broken
    else:
        if not isinstance(data, dict):
            return None
        activity_id = data.get("activityId", "")
        if activity_id is None:
            activity_id = ""
    if not isinstance(activity_id, str) or len(activity_id) > max_length:
        return None
    return activity_id


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
        early_read: EarlyRead | None = None,
        change_debounce: float = CHANGE_DEBOUNCE,
    ) -> None:
        """`journal`: the operation journal in the state directory (`cua run` passes it).
        `early_read`: the engine read for the first current state, when the caller started
        it already (`cua run` does, before importing this module); else `run` starts it."""
        self.config = config
        self.engine = engine
        self.topics = Topics.for_domain(config.domain)
        self._journal = journal
        self.state_reader = CurrentStateReader(engine, config.update)
        self.connection = MqttConnection(
            config.mqtt,
            self.topics.subscriptions,
            on_message=self._on_message,
            on_connect=self._on_connect,
        )
        self._debounce = change_debounce
        # activityIds of current state requests waiting for the next engine read (ordered)
        self._state_pending: dict[str, None] = {}
        self._state_wanted = asyncio.Event()
        self._changed = asyncio.Event()
        # One current state built and published at a time: a reply built from engine reads
        # taken before a change must not be published after the state showing the change
        # (the last one published is the retained one).
        self._state_lock = asyncio.Lock()
        self._last_state: dict[str, Any] | None = None
        self._early_read = early_read
        self._manager_may_start = asyncio.Event()  # a current state was acknowledged (or stop)
        self._accepting = True
        self._limits = config.update.limits
        self._throttle = Throttle(log)
        self.stop_reason = ""  # what ended the agent (e.g. SIGTERM), said in INCOMPLETE

    @functools.cached_property
    def manager(self) -> UpdateManager:
        """The update manager, made at first use: `run` starts it once the first current
        state reached the broker, so that importing the update machinery does not delay that
        state (a message that comes earlier makes it at once; it waits in the manager's
        queue)."""
        from cua.update.manager import UpdateManager

        return UpdateManager(self.engine, self, self.config.update, self._journal)

    # --- FeedbackPublisher -----------------------------------------------------------------

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Delivered | None = None,
    ) -> None:
        status = feedback.status.value if feedback.status else "-"
        if feedback.status in FAILURE_STATUSES:
            # Every failure says why in the log too, not only in the feedback.
            log.warning("[%s] feedback %s: %s", activity_id, status, failure_reason(feedback))
        else:
            log.info("[%s] feedback %s", activity_id, status)
        await self.connection.wait_for_room()
        self.connection.publish(
            self.topics.desired_state_feedback,
            encode_feedback(activity_id, feedback),
            qos=1,
            retain=False,
            kind=OutgoingKind.FEEDBACK,
            on_delivered=on_delivered,
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
            group.create_task(self.connection.run(), name="mqtt")
            if self._early_read is None:
                self._early_read = EarlyRead(self.state_reader, group)
            group.create_task(self._run_manager(), name="update-manager")
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
            self._manager_may_start.set()
            for task in helpers:
                task.cancel()
            self._early_read.cancel()
            await self.manager.stop(self.stop_reason)
            await self.connection.stop(FLUSH_TIMEOUT)
        self._throttle.flush()
        log.info("stopped")

    async def _run_manager(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MANAGER_START_DELAY):
                await self._manager_may_start.wait()
        if self._accepting:
            await self.manager.run()

    async def _notify_ready(self) -> None:
        # Ready once the first connect attempt has ended, connected or not: a broker that is
        # down is retried forever (D2), so it must not hold up systemd (boot waits for a
        # `Type=notify` unit, and kills it after TimeoutStartSec).
        await self.connection.wait_first_attempt()
        if notify("READY=1"):
            log.info("told systemd the agent is ready")

    async def _on_connect(self) -> None:
        # Kanto reports the current state on every connect, with a fresh activityId (§5.5).
        self._request_state(initial_state_activity_id())

    # --- incoming ------------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        if not self._accepting:
            self._throttle.info("stopping", "stopping: ignored a message on %s", topic)
            return
        try:
            if topic == self.topics.desired_state:
                self._on_desired_state(payload)
            elif topic == self.topics.desired_state_command:
                self._on_command(payload)
            elif topic == self.topics.current_state_get:
                self._on_state_request(payload)
            else:
                log.debug("ignored a message on unexpected topic %s", topic)
        except Exception as error:  # a bug must not lose the message: answer it when possible
            log.exception("unexpected error while handling a message on %s", topic)
            self._answer_unexpected(topic, payload, error)

    def _answer_unexpected(self, topic: str, payload: bytes, error: Exception) -> None:
        activity_id = read_member(payload, ("activityId",))
        if activity_id is None or len(activity_id) > self._limits.max_activity_id_length:
            return
        from cua.update.manager import unexpected_error_message

        message = unexpected_error_message(error)
        if topic == self.topics.desired_state:
            self.manager.report_invalid(activity_id, message)
        elif topic == self.topics.desired_state_command:
            command = _readable_command(payload)
            if command is not None:
                self.manager.report_invalid_command(activity_id, command, message)

    def _on_state_request(self, payload: bytes) -> None:
        topic = self.topics.current_state_get
        activity_id = _readable_activity_id(payload, self._limits.max_activity_id_length)
        if activity_id is None:
            self._throttle.warning(
                "state-request",
                "ignored a current state request on %s: not a JSON envelope with a readable"
                " activityId",
                topic,
            )
            return
        self._throttle.info(
            "state-request", "current state requested (activityId %s)", quoted(activity_id)
        )
        self._request_state(activity_id)

    def _decode(
        self, payload: bytes, payload_type: type[PayloadT], what: str
    ) -> Envelope[PayloadT]:
        return decode(
            payload,
            payload_type,
            what,
            max_size=self._limits.max_message_size,
            max_activity_id=self._limits.max_activity_id_length,
        )

    def _on_desired_state(self, payload: bytes) -> None:
        try:
            envelope = self._decode(payload, DesiredState, "desired state")
        except MessageError as exc:
            if exc.activity_id is None:
                self._throttle.warning(
                    "invalid-desired-state",
                    "ignored a desired state message without a readable activityId: %s",
                    exc,
                )
                return
            self._throttle.warning(
                "invalid-desired-state",
                "desired state %s is invalid: %s",
                quoted(exc.activity_id),
                exc,
            )
            self.manager.report_invalid(exc.activity_id, str(exc))
            return
        log.info("desired state %s received", quoted(envelope.activity_id))
        unknown = desired_state_unknown_keys(load_json(payload))  # decoded once already
        for warning in unknown:
            log.warning("[%s] %s", envelope.activity_id, warning)
        # A `null` payload decodes into the zero desired state, as in Go: no domain, which
        # identification rejects with Kanto's text.
        self.manager.submit_desired_state(
            envelope.activity_id, envelope.payload or DesiredState(), unknown
        )

    def _on_command(self, payload: bytes) -> None:
        try:
            envelope = self._decode(payload, DesiredStateCommand, "desired state command")
        except MessageError as exc:
            # Kanto drops a command it cannot decode. When its activityId and command name
            # can be read, we answer that command's failure status with what is wrong.
            command = _readable_command(payload)
            if exc.activity_id is not None and command is not None:
                self._throttle.warning(
                    "invalid-command",
                    "invalid %s command (activityId %s): %s",
                    command,
                    quoted(exc.activity_id),
                    exc,
                )
                self.manager.report_invalid_command(exc.activity_id, command, str(exc))
                return
            where = (
                f" (activityId {quoted(exc.activity_id)})" if exc.activity_id is not None else ""
            )
            self._throttle.warning(
                "invalid-command", "ignored a desired state command%s: %s", where, exc
            )
            return
        if envelope.payload is None:
            self._throttle.warning(
                "invalid-command",
                "ignored a desired state command without payload (activityId %s)",
                quoted(envelope.activity_id),
            )
            return
        log.info(
            "command %s (baseline %s) for %s received",
            quoted(envelope.payload.command),
            quoted(envelope.payload.baseline),
            quoted(envelope.activity_id),
        )
        self.manager.submit_command(envelope.activity_id, envelope.payload)

    # --- current state ---------------------------------------------------------------------------

    async def _current_state(self) -> Inventory:
        return await self.state_reader.read()

    async def _first_or_fresh_state(self) -> Inventory:
        """The early read, once, if it is still young; else a fresh read of the engine."""
        inventory = await self._early_read.take() if self._early_read is not None else None
        if inventory is not None:
            # A container change between that read and the opening of the engine's event
            # stream would go unseen: check once more (published if different).
            self._changed.set()
            return inventory
        return await self._current_state()

    def _publish_state(self, activity_ids: Sequence[str], inventory: Inventory) -> None:
        """One current state, published once for each of `activity_ids` (encoded once)."""
        self._last_state = inventory.to_wire()
        payload = go_json(self._last_state)
        for activity_id in activity_ids:
            self.connection.publish(
                self.topics.current_state,
                encode_with_payload(activity_id, payload),
                qos=1,
                retain=True,
                kind=OutgoingKind.OTHER,
                # The update manager starts once the first current state reached the broker.
                on_delivered=self._manager_may_start.set,
            )

    def _request_state(self, activity_id: str) -> None:
        """Ask for a current state reply. Requests waiting together are served by one read
        of the engine, each answered with its own activityId (once per activityId)."""
        if activity_id in self._state_pending:
            return
        if len(self._state_pending) >= MAX_PENDING_STATE_REQUESTS:
            self._throttle.warning(
                "state-request",
                "dropped the current state request %s: %d requests wait already",
                quoted(activity_id),
                len(self._state_pending),
            )
            return
        self._state_pending[activity_id] = None
        self._state_wanted.set()

    async def _serve_state_requests(self) -> None:
        while True:
            await self._state_wanted.wait()
            async with self._state_lock:
                self._state_wanted.clear()
                activity_ids = list(self._state_pending)
                self._state_pending.clear()
                try:
                    inventory = await self._first_or_fresh_state()
                except Exception:  # a bug here must not stop the agent; the next request retries
                    log.exception(
                        "cannot build the current state for %d request(s)", len(activity_ids)
                    )
                    continue
                self._publish_state(activity_ids, inventory)
            if len(activity_ids) == 1:
                self._throttle.info(
                    "state-published",
                    "current state published (activityId %s)",
                    quoted(activity_ids[0]),
                )
            else:
                self._throttle.info(
                    "state-published",
                    "current state published for %d requests (one engine read)",
                    len(activity_ids),
                )

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
                self._publish_state([""], inventory)
            log.info("current state published after container changes")

    async def _watch_engine_events(self) -> None:
        """Follow the engine's events; survive the engine going away and coming back."""
        backoff = Backoff(0.5, 10.0)
        # An engine that is down is reported once, then once per `backoff.maximum` while it
        # stays down (not at every retry), and once when it is back.
        last_report: float | None = None
        while True:
            try:
                if last_report is not None:
                    # Reported down: one listing says whether it is back (the event stream
                    # says nothing until an event comes).
                    await self.engine.list_containers()
                    log.info("the container engine can be reached again")
                    last_report = None
                async for _event in self.engine.events():
                    backoff.reset()
                    self._changed.set()
                log.info("engine event stream ended; reopening")
            except EngineUnavailableError as exc:
                now = asyncio.get_running_loop().time()
                if last_report is None or now - last_report >= backoff.maximum:
                    log.warning("%s; retrying", exc)
                    last_report = now
            except Exception as exc:  # any engine failure: keep watching, never crash
                log.warning("engine event stream failed: %s", exc)
            await asyncio.sleep(backoff.next_delay())
            # Changes may have happened while the stream was down.
            self._changed.set()


def _readable_command(raw: bytes) -> CommandType | None:
    """The command name of a command message that failed to decode, if it is a known one."""
    name = read_member(raw, ("payload", "command"))
    try:
        return None if name is None else CommandType(name)
    except ValueError:
        return None
