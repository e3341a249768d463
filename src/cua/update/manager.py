"""The update manager: one operation at a time, queueing and supersede, the two modes.

Two tasks share the work. The dispatcher takes what arrives (desired states, commands,
undecodable messages) at once: it keeps only the newest waiting desired state (the others
get SUPERSEDED, D9) and, in standalone mode, answers commands for the running operation
with the wrong-state failure. The worker runs the ordered work: identification, then the
phases (standalone) or the commands (orchestrated), one operation at a time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cua.api.models import (
    CommandType,
    DesiredState,
    DesiredStateCommand,
    DesiredStateFeedback,
    StatusType,
)
from cua.containers.compare import ActionKind
from cua.containers.errors import DesiredStateError
from cua.containers.parse import ParsedDesiredState, parse_desired_state
from cua.engine.base import Engine, EngineError, EngineUnavailableError
from cua.settings import Mode, UpdateSettings
from cua.update.identify import Settled, current_containers
from cua.update.journal import Journal, JournalError
from cua.update.operation import COMMANDS, Operation, superseded_message
from cua.update.plan import Plan, PlanError, make_plan
from cua.update.publisher import Delivered, FeedbackPublisher
from cua.update.recovery import interrupted_activities, interrupted_message, recover

log = logging.getLogger(__name__)


INTERRUPTED_KEPT = 16  # interrupted operations whose later commands are answered


@dataclass(frozen=True, slots=True)
class _Desired:
    activity_id: str
    desired: DesiredState
    unknown_keys: tuple[str, ...] = ()  # warnings for keys the decoding ignored


@dataclass(frozen=True, slots=True)
class _Parsed:
    activity_id: str
    parsed: ParsedDesiredState


@dataclass(frozen=True, slots=True)
class _Command:
    activity_id: str
    command: DesiredStateCommand
    invalid: str = ""  # why the message failed to decode (only its command name was read)


@dataclass(frozen=True, slots=True)
class _Invalid:
    activity_id: str
    message: str


_Incoming = _Desired | _Command | _Invalid
_Work = _Parsed | _Command | _Invalid


def unexpected_error_message(error: Exception) -> str:
    """The feedback message for a bug met while handling a message (details in the log)."""
    return (
        f"internal error in the update agent ({type(error).__name__}); "
        "the agent log has the details"
    )


class _SafePublisher:
    """A publisher that never raises: a lost feedback is logged, the operation goes on
    (the device must not be left half-updated because the broker link failed)."""

    def __init__(self, publisher: FeedbackPublisher) -> None:
        self._publisher = publisher

    async def publish_feedback(
        self,
        activity_id: str,
        feedback: DesiredStateFeedback,
        on_delivered: Delivered | None = None,
    ) -> None:
        try:
            await self._publisher.publish_feedback(activity_id, feedback, on_delivered=on_delivered)
        except Exception:
            log.exception("[%s] cannot publish %s feedback", activity_id, feedback.status)


class UpdateManager:
    """Processes desired states and commands for one domain (see coord/update-api.md)."""

    def __init__(
        self,
        engine: Engine,
        publisher: FeedbackPublisher,
        settings: UpdateSettings,
        journal: Journal | None = None,
    ) -> None:
        """`journal`: the one of the agent's state directory (crash recovery); None: no
        journal (tools, which must not touch the journal of an agent that may run)."""
        self._engine = engine
        self._publisher: FeedbackPublisher = _SafePublisher(publisher)
        self._settings = settings
        self._inbox: asyncio.Queue[_Incoming | None] = asyncio.Queue()
        self._work: deque[_Work] = deque()
        self._work_ready = asyncio.Event()
        self._running: Operation | None = None  # the operation doing engine work now
        self._pending: Operation | None = None  # orchestrated: waiting for commands
        self._stopping = False
        self._stop_reason = ""
        self._apply_stopped: Operation | None = None  # `apply` ended by `request_stop`
        self._active = False
        self._stopped = asyncio.Event()
        self._journal = journal if journal is not None else Journal(None)
        self._recovered = False  # recovery done; until then it is tried before each operation
        self._settled = Settled()  # containers identification need not inspect
        # Operations a restart interrupted -> why (the answer to their later commands).
        self._interrupted: dict[str, str] = {}

    # --- submitting (non-blocking) -------------------------------------------------------------

    def submit_desired_state(
        self, activity_id: str, desired: DesiredState, unknown_keys: Sequence[str] = ()
    ) -> None:
        """`unknown_keys`: warnings for keys of the message that were ignored (in the
        IDENTIFIED message, as ignored entries; strict mode: identification fails)."""
        self._inbox.put_nowait(_Desired(activity_id, desired, tuple(unknown_keys)))

    def submit_command(self, activity_id: str, command: DesiredStateCommand) -> None:
        self._inbox.put_nowait(_Command(activity_id, command))

    def report_invalid_command(self, activity_id: str, command: CommandType, message: str) -> None:
        """A command message that failed to decode, but whose activityId and command name
        could be read: the operation answers `<command>_FAILURE` with `message`, unchanged."""
        self._inbox.put_nowait(_Command(activity_id, DesiredStateCommand(command=command), message))

    def report_invalid(self, activity_id: str, message: str) -> None:
        self._inbox.put_nowait(_Invalid(activity_id, message))

    # --- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Process submitted work until `stop()` (or cancellation)."""
        self._active = True
        self._stopped.clear()
        try:
            await self._recover()
            async with asyncio.TaskGroup() as group:
                dispatcher = group.create_task(self._dispatch())
                await self._worker()
                dispatcher.cancel()
        finally:
            self._active = False
            self._stopped.set()

    def request_stop(self, reason: str = "") -> None:
        """No new work; the operation stops between engine calls. `reason` (e.g. `SIGTERM`)
        is said in its INCOMPLETE message."""
        self._stopping = True
        self._stop_reason = self._stop_reason or reason
        if self._running is not None:
            self._running.request_stop(self._stop_reason)
        self._work_ready.set()

    async def stop(self, reason: str = "") -> None:
        """Graceful: no new work; the operation stops between engine calls, reports what it
        did (its phase's failure, then INCOMPLETE); returns when `run()` has returned."""
        self.request_stop(reason)
        if self._active:
            await self._stopped.wait()

    async def _recover(self) -> None:
        """Crash recovery; then the interrupted operation gets its final status (our-behaviour
        "After a crash"), and later commands for it get their failure with the same reason."""
        entries = self._journal.read()
        try:
            done = await recover(
                self._engine,
                self._journal,
                domain=self._settings.domain,
                grace_period=self._settings.stop_grace_period,
            )
        except EngineUnavailableError as error:
            # Tried again before the next operation. An error only when a journal says an
            # operation was interrupted; else the engine being down is reported elsewhere.
            if entries:
                log.error("crash recovery failed: %s", error)
            else:
                log.debug("crash recovery waits for the engine: %s", error)
            return
        except EngineError as error:
            log.error("crash recovery failed: %s", error)
            return
        if not self._recovered:  # it may have changed containers read before
            self._settled = Settled()
        self._recovered = True
        message = interrupted_message(done)
        for activity_id in interrupted_activities(entries):
            self._remember_interrupted(activity_id, message)
        for owed in self._journal.read():  # what recovery left there: final statuses owed
            if owed.interrupted:
                self._remember_interrupted(owed.activity, owed.message)
                log.warning("[%s] interrupted by a restart: %s", owed.activity, owed.message)
            await self._publisher.publish_feedback(
                owed.activity,
                DesiredStateFeedback(status=StatusType(owed.status), message=owed.message),
                on_delivered=functools.partial(self._journal.close, owed.activity),
            )

    def _remember_interrupted(self, activity_id: str, message: str) -> None:
        self._interrupted[activity_id] = message
        while len(self._interrupted) > INTERRUPTED_KEPT:
            del self._interrupted[next(iter(self._interrupted))]

    async def _answer_interrupted(self, item: _Command) -> bool:
        """A command for an operation a restart interrupted: its failure, with the reason."""
        message = self._interrupted.get(item.activity_id)
        if message is None:
            return False
        try:
            kind = CommandType(item.command.command)
        except ValueError:
            return True  # an unknown command gets no answer (Kanto)
        await self._publish(
            item.activity_id,
            DesiredStateFeedback(
                status=COMMANDS[kind].failure, baseline=item.command.baseline, message=message
            ),
        )
        return True

    async def _dispatch(self) -> None:
        while True:
            item = await self._inbox.get()
            if item is None or self._stopping:
                continue
            try:
                if isinstance(item, _Desired):
                    await self._accept_desired(item)
                elif isinstance(item, _Command) and self._settings.mode is Mode.STANDALONE:
                    await self._answer_standalone(item)
                else:
                    self._queue(item)
            except Exception as error:  # one message must never stop the agent
                await self._answer_unexpected(item, error)

    async def _answer_unexpected(self, item: _Incoming | _Work, error: Exception) -> None:
        """A bug met while handling one message: logged with its traceback, and the message
        gets its phase's failure (IDENTIFICATION_FAILED, `<COMMAND>_FAILURE`)."""
        log.error(
            "[%s] unexpected error while handling this message",
            item.activity_id,
            exc_info=error,
        )
        message = unexpected_error_message(error)
        if isinstance(item, _Command):
            try:
                kind = CommandType(item.command.command)
            except ValueError:
                return  # an unknown command gets no answer (Kanto)
            await self._publish(
                item.activity_id,
                DesiredStateFeedback(
                    status=COMMANDS[kind].failure, baseline=item.command.baseline, message=message
                ),
            )
        else:
            await self._publish_failed(item.activity_id, message)

    def _queue(self, item: _Work) -> None:
        self._work.append(item)
        self._work_ready.set()

    async def _accept_desired(self, item: _Desired) -> None:
        try:
            parsed = self._parse(item.desired, item.unknown_keys)
        except DesiredStateError as error:
            self._queue(_Invalid(item.activity_id, str(error)))
            return
        waiting = [w for w in self._work if isinstance(w, _Parsed)]
        for old in waiting:
            self._work.remove(old)  # only the newest waiting desired state is kept (D9)
        self._queue(_Parsed(item.activity_id, parsed))
        for old in waiting:
            log.info("[%s] superseded by %s before it started", old.activity_id, item.activity_id)
            await self._publish(
                old.activity_id,
                DesiredStateFeedback(
                    status=StatusType.SUPERSEDED, message=superseded_message(item.activity_id)
                ),
            )

    async def _answer_standalone(self, item: _Command) -> None:
        running = self._running
        if running is None or running.activity_id != item.activity_id or running.finished:
            if not await self._answer_interrupted(item):
                log.info("[%s] command ignored: no such operation running", item.activity_id)
            return
        if item.invalid:
            await running.refuse(CommandType(item.command.command), item.invalid)
        else:
            await running.reject(item.command.command, item.command.baseline)

    async def _worker(self) -> None:
        while not self._stopping:
            if not self._work:
                self._work_ready.clear()
                await self._work_ready.wait()
                continue
            item = self._work.popleft()
            try:
                if isinstance(item, _Invalid):
                    await self._publish_failed(item.activity_id, item.message)
                elif isinstance(item, _Parsed):
                    await self._run_desired(item)
                else:
                    await self._run_command(item)
            except Exception as error:  # a bug must not stop the agent; the next message is served
                await self._answer_unexpected(item, error)
        if self._work:
            log.warning("stopping: %d queued message(s) not processed", len(self._work))

    async def _run_desired(self, item: _Parsed) -> None:
        if not self._recovered:
            # Recovery failed at start (engine down): the journal is still there; it must
            # be used before an operation starts one of its own.
            await self._recover()
        operation = await self._identify(item.activity_id, item.parsed, replacing=self._pending)
        if isinstance(operation, StatusType):
            return
        if self._settings.mode is Mode.STANDALONE:
            self._running = operation
            if self._stopping:  # stop() came during identification: do not start
                operation.request_stop(self._stop_reason)
            try:
                await operation.run_standalone()
            except Exception as error:  # identified: the end is INCOMPLETE, not a phase
                await self._end_unexpected(operation, error)
            finally:
                self._running = None
                self._unsettle(operation.plan)
        else:
            self._pending = operation

    async def _run_command(self, item: _Command) -> None:
        operation = self._pending
        if operation is None or operation.activity_id != item.activity_id:
            if not await self._answer_interrupted(item):
                log.info(
                    "[%s] command ignored: no pending operation with this id", item.activity_id
                )
            return
        if item.invalid:
            await operation.refuse(CommandType(item.command.command), item.invalid)
            return
        self._running = operation
        try:
            await operation.command(item.command.command, item.command.baseline)
        except Exception as error:
            await self._answer_unexpected(item, error)
        finally:
            self._running = None
            self._unsettle(operation.plan)
        if operation.finished:
            self._pending = None

    async def _end_unexpected(self, operation: Operation, error: Exception) -> None:
        log.error(
            "[%s] unexpected error during the operation", operation.activity_id, exc_info=error
        )
        if operation.finished:
            return
        operation.final_status = StatusType.INCOMPLETE
        await self._publish(
            operation.activity_id,
            operation.feedback(StatusType.INCOMPLETE, message=unexpected_error_message(error)),
        )

    # --- identification ---------------------------------------------------------------------

    def _parse(self, desired: DesiredState, unknown_keys: Sequence[str] = ()) -> ParsedDesiredState:
        """Parse for this domain, with the unknown-key warnings first. Raises
        DesiredStateError (in strict mode also for an unknown key)."""
        return parse_desired_state(
            desired,
            self._settings.domain,
            strict=self._settings.strict,
            max_components=self._settings.limits.max_components,
            unknown_keys=unknown_keys,
        )

    async def _publish(self, activity_id: str, feedback: DesiredStateFeedback) -> None:
        await self._publisher.publish_feedback(activity_id, feedback)

    async def _publish_failed(self, activity_id: str, message: str) -> None:
        await self._publish(
            activity_id,
            DesiredStateFeedback(status=StatusType.IDENTIFICATION_FAILED, message=message),
        )

    async def _make_plan(self, parsed: ParsedDesiredState) -> Plan:
        for operation in (self._pending, self._running):
            if operation is not None:  # it may change its containers
                self._unsettle(operation.plan)
        current = await current_containers(
            self._engine,
            {c.id for c in parsed.containers},
            self._settings.manage,
            self._settings.domain,
            self._settled,
        )
        plan = make_plan(
            parsed,
            current,
            domain=self._settings.domain,
            manage=self._settings.manage,
            system_containers=self._settings.system_containers,
        )
        self._unsettle(plan)
        return plan

    def _unsettle(self, plan: Plan) -> None:
        """The containers `plan` changes (or rolls back) are inspected again next time."""
        self._settled.discard(
            action.current.id
            for action in plan.actions
            if action.current is not None and action.kind is not ActionKind.CHECK
        )

    async def _identify(
        self, activity_id: str, parsed: ParsedDesiredState, replacing: Operation | None = None
    ) -> Operation | StatusType:
        """IDENTIFYING, then IDENTIFIED (+ COMPLETED when there is nothing to do) or
        IDENTIFICATION_FAILED. Returns the operation when it has actions, else the end.

        `replacing`: the pending (orchestrated) operation. As in Kanto (§3.8) it is kept when
        this desired state fails identification or has nothing to do; one with actions
        replaces it: its changes are undone, it gets SUPERSEDED (D9), and identification
        runs again on the restored device."""
        listed_at = time.monotonic()  # the plan's listing is this new, or newer
        async with asyncio.TaskGroup() as group:
            # From here on a restart owes this activity an answer (our-behaviour "After a
            # crash"): the IDENTIFYING waits for that record, so no one sees it before. The
            # engine reads of identification change nothing: they go on meanwhile.
            planning = group.create_task(_caught(self._make_plan(parsed)))
            recorded = await _caught(asyncio.to_thread(self._journal.started, activity_id))
            if recorded is not None:
                planning.cancel()
            await self._publish(activity_id, DesiredStateFeedback(status=StatusType.IDENTIFYING))
        if recorded is not None:
            await self._publish_failed(activity_id, str(recorded))
            return StatusType.IDENTIFICATION_FAILED
        try:
            plan = planning.result()
            if isinstance(plan, Exception):
                raise plan
            if replacing is not None and plan.actions:
                self._pending = None
                changed = replacing.changed_device
                log.info("[%s] superseded by %s", replacing.activity_id, activity_id)
                await replacing.supersede(superseded_message(activity_id))
                self._unsettle(replacing.plan)
                if changed:
                    plan = await self._make_plan(parsed)
        except (EngineError, PlanError, JournalError) as error:
            self._identification_ended(activity_id)
            await self._publish_failed(activity_id, str(error))
            return StatusType.IDENTIFICATION_FAILED
        operation = Operation(
            activity_id,
            plan,
            self._engine,
            self._publisher,
            self._settings,
            journal=self._journal,
            listed_at=listed_at,
        )
        if not plan.actions:
            self._identification_ended(activity_id)
        await operation.publish_identified()
        if not plan.actions:
            await self._publish(activity_id, DesiredStateFeedback(status=StatusType.COMPLETED))
            return StatusType.COMPLETED
        return operation

    def _identification_ended(self, activity_id: str) -> None:
        """The activity ends at identification: nothing for a restart to answer. Its records
        go (those of the pending operation, or of one whose final status is not yet
        acknowledged, stay)."""
        self._journal.close(activity_id)

    # --- direct use (CLI, tests) ------------------------------------------------------------

    async def plan(self, desired: DesiredState, unknown_keys: Sequence[str] = ()) -> Plan:
        """Identification only: no feedback, no change. Raises DesiredStateError, EngineError."""
        return await self._make_plan(self._parse(desired, unknown_keys))

    async def apply(
        self, activity_id: str, desired: DesiredState, unknown_keys: Sequence[str] = ()
    ) -> StatusType:
        """One desired state to its end in the standalone flow, publishing its feedback."""
        await self._recover()
        try:
            parsed = self._parse(desired, unknown_keys)
        except DesiredStateError as error:
            await self._publish_failed(activity_id, str(error))
            return StatusType.IDENTIFICATION_FAILED
        operation = await self._identify(activity_id, parsed)
        if isinstance(operation, StatusType):
            return operation
        self._running = operation
        if self._stopping:
            operation.request_stop(self._stop_reason)
        try:
            status = await operation.run_standalone()
        finally:
            self._running = None
            self._unsettle(operation.plan)
        if self._stopping and status is StatusType.INCOMPLETE:
            self._apply_stopped = operation
        return status

    async def restore_interrupted(self) -> tuple[list[str], list[str]]:
        """After `apply` ended by `request_stop`: undo what it changed (no journal is kept
        by the tools, so nothing else would). Returns the names restored and failed."""
        operation, self._apply_stopped = self._apply_stopped, None
        if operation is None:
            return [], []
        return await operation.undo_changes()


_T = TypeVar("_T")


async def _caught(awaitable: Awaitable[_T]) -> _T | EngineError | PlanError | JournalError:
    """The result, or the error identification answers with IDENTIFICATION_FAILED."""
    try:
        return await awaitable
    except (EngineError, PlanError, JournalError) as error:
        return error
