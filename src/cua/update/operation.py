"""One update operation: the phases, Kanto's exact feedback, and our fixes (spec §3.4).

The feedback algorithms of §3.4.1-§3.4.3 are followed step by step (the comments name
them); each command's rules (when it may run, its failure status, its handler) are one
row of `COMMANDS`; the engine work and its undo are in `steps`. Our deviations, each marked
with its number from our-behaviour.md: D3 CLEANUP after a failure restores the device, D4
rollback restores the previous limits, D5 rollback starts what it must (and only if
needed), D6 completion looks at every baseline, D14 CLEANUP of an unknown baseline is
CLEANUP_FAILURE.
Beyond the D-list, "Activation means running": a container started by ACTIVATE is watched
(`activation`) before its action succeeds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cua.api.models import (
    Action,
    ActionStatusType,
    CommandType,
    Component,
    DesiredStateFeedback,
    StatusType,
)
from cua.containers.compare import ActionKind
from cua.containers.state import ContainerStatus
from cua.engine.base import Engine
from cua.settings import UpdateSettings
from cua.update.activation import ActivationWatch, watch_activation
from cua.update.downloads import Downloads
from cua.update.journal import Journal, JournalError
from cua.update.lookahead import Lookahead
from cua.update.plan import Plan
from cua.update.publisher import FeedbackPublisher
from cua.update.steps import ActionState, DeviceSteps

log = logging.getLogger(__name__)

ALL_BASELINES = ("", "*")

MSG_CREATED = "New container created."
MSG_STOPPED = "Old container instance is stopped."
MSG_UPDATED = "Container instance is updated with new configuration."
MSG_RUNNING = "Existing container instance is running."
MSG_STARTED = "New container instance is started."
MSG_REMOVED = "Old container instance is removed."
MSG_ROLLBACK_UPDATE = (
    "Update unsuccessful, but rollback succeeded - "
    "container configuration restored from older instance."
)
MSG_ROLLBACK_RECREATE = (
    "Update unsuccessful, but rollback succeeded - "
    "new container instance destroyed, old container instance restored."
)
MSG_ROLLBACK_CREATE = (
    "Update unsuccessful, but rollback succeeded - new container instance destroyed."
)
MSG_STOPPING = "the agent is stopping: the operation was interrupted"

# Seconds for which identification's container listing stands for the containers' states
# at ACTIVATE of a plan that changes nothing (`Operation._identification_statuses`).
LISTING_FRESH = 1.0


def wrong_state_message(command: CommandType, allowed: Sequence[StatusType]) -> str:
    """`UPDATE is possible only after status DOWNLOAD_SUCCESS is reported` (§3.4)."""
    return f"{command} is possible only after status {'|'.join(allowed)} is reported"


def standalone_refusal_message(command: CommandType) -> str:
    """Ours: `CLEANUP is not possible while the operation runs (standalone mode)`."""
    return f"{command} is not possible while the operation runs (standalone mode)"


def superseded_message(activity_id: str) -> str:
    """Ours (Kanto never sends SUPERSEDED): which desired state took the place."""
    return f"replaced by a newer desired state (activityId {activity_id})"


def stopped_message(reason: str) -> str:
    """The INCOMPLETE message of an operation ended by a stop request (ours)."""
    return f"stopped by {reason}: the operation was interrupted"


def unknown_baseline_message(baseline: str) -> str:
    return f"Unknown baseline {baseline}"


class OperationStopped(Exception):
    """The agent is stopping; raised between engine calls, never in the middle of one."""


@dataclass(slots=True)
class BaselineState:
    indexes: tuple[int, ...]
    status: StatusType = StatusType.IDENTIFIED


@dataclass(frozen=True, slots=True)
class _Phase:
    """DOWNLOAD, UPDATE or ACTIVATE, for the algorithm of §3.4.1."""

    kinds: frozenset[ActionKind]
    running: StatusType
    success: StatusType
    failure: StatusType
    action_running: ActionStatusType
    action_success: ActionStatusType
    action_failure: ActionStatusType


_DOWNLOAD = _Phase(
    frozenset({ActionKind.CREATE, ActionKind.RECREATE}),
    StatusType.DOWNLOADING,
    StatusType.DOWNLOAD_SUCCESS,
    StatusType.DOWNLOAD_FAILURE,
    ActionStatusType.DOWNLOADING,
    ActionStatusType.DOWNLOAD_SUCCESS,
    ActionStatusType.DOWNLOAD_FAILURE,
)
_UPDATE = _Phase(
    frozenset({ActionKind.RECREATE, ActionKind.DESTROY, ActionKind.UPDATE}),
    StatusType.UPDATING,
    StatusType.UPDATE_SUCCESS,
    StatusType.UPDATE_FAILURE,
    ActionStatusType.UPDATING,
    ActionStatusType.UPDATE_SUCCESS,
    ActionStatusType.UPDATE_FAILURE,
)
_ACTIVATE = _Phase(
    frozenset({ActionKind.CHECK, ActionKind.CREATE, ActionKind.RECREATE, ActionKind.UPDATE}),
    StatusType.ACTIVATING,
    StatusType.ACTIVATION_SUCCESS,
    StatusType.ACTIVATION_FAILURE,
    ActionStatusType.ACTIVATING,
    ActionStatusType.ACTIVATION_SUCCESS,
    ActionStatusType.ACTIVATION_FAILURE,
)


def _with_warnings(message: str, action: ActionState) -> str:
    if not action.host_warnings:
        return message  # Kanto's bytes
    for warning in action.host_warnings:
        log.warning("container %s: %s", action.name, warning)
    return " ".join((message, *(f"Warning: {w}." for w in action.host_warnings)))


def _start_order(
    actions: Sequence[ActionState],
) -> tuple[dict[int, asyncio.Event], dict[int, list[asyncio.Event]]]:
    """ACTIVATE run ahead: an event per new container, set once it is started, and for
    each action (by id) the events of the new containers its `container_<hostname>` extra
    hosts name. A dependant waits only for targets that have no such entries or come
    before it, so the waits never form a cycle (Kanto starts one after the other)."""
    starts = (ActionKind.CREATE, ActionKind.RECREATE)
    started = {id(a): asyncio.Event() for a in actions if a.kind in starts}
    by_host: dict[str, list[tuple[int, ActionState]]] = {}
    for position, action in enumerate(actions):
        if action.kind in starts and action.planned.desired is not None:
            hostname = action.planned.desired.spec.host_name
            by_host.setdefault(hostname, []).append((position, action))
    waits: dict[int, list[asyncio.Event]] = {}
    for position, action in enumerate(actions):
        for hostname in action.host_targets:
            for target_position, target in by_host.get(hostname, []):
                if target is not action and (not target.host_targets or target_position < position):
                    waits.setdefault(id(action), []).append(started[id(target)])
    return started, waits


class Operation:
    """The actions of one identified desired state and the commands run on them."""

    def __init__(
        self,
        activity_id: str,
        plan: Plan,
        engine: Engine,
        publisher: FeedbackPublisher,
        settings: UpdateSettings,
        *,
        journal: Journal,
        listed_at: float | None = None,
    ) -> None:
        self.activity_id = activity_id
        self.plan = plan
        # time.monotonic() when identification's listing began (None: unknown): a plan that
        # changes nothing may take the containers' states from it at ACTIVATE (`_activate`).
        self._listed_at = listed_at
        self.actions = [ActionState(planned) for planned in plan.actions]
        self._engine = engine
        self._publisher = publisher
        self._settings = settings
        self._journal = journal
        self._steps = DeviceSteps(
            engine, activity_id, settings.stop_grace_period, self._journal, settings.domain
        )
        self._watch = ActivationWatch(settings.activation_window, settings.activation_timeout)
        self._all = BaselineState(tuple(range(len(self.actions))))
        self._baselines = {
            title: BaselineState(indexes) for title, indexes in plan.baselines.items()
        }
        self._clean = True  # every cleaned baseline was activated and cleaned up (D6)
        self._stopping = False
        self._stop_reason = ""
        self._straight_on = False  # standalone: the phases run one after the other at once
        self._last_progress = 0.0
        self.final_status: StatusType | None = None
        self._wire_actions: list[Action] = [Action() for _ in self.actions]  # see feedback

    # --- state ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.final_status is not None

    @property
    def changed_device(self) -> bool:
        return any(action.changed for action in self.actions)

    def request_stop(self, reason: str = "") -> None:
        """Stop at the next point between engine calls (graceful agent stop). `reason`
        (e.g. `SIGTERM`) is said in the INCOMPLETE message."""
        self._stopping = True
        self._stop_reason = self._stop_reason or reason

    def _checkpoint(self) -> None:
        if self._stopping:
            raise OperationStopped(MSG_STOPPING)

    def feedback(
        self, status: StatusType, baseline: str = "", message: str = ""
    ) -> DesiredStateFeedback:
        """A feedback message carrying every action, as it is now. An action's wire model
        is rebuilt only when it changed (with many components most of them did not)."""
        for index, action in enumerate(self.actions):
            if action.wire_changed:
                action.wire_changed = False
                self._wire_actions[index] = Action(
                    component=Component(
                        id=action.planned.component_id, version=action.planned.version
                    ),
                    status=action.status,
                    progress=action.progress,
                    message=action.message,
                )
        return DesiredStateFeedback(
            baseline=baseline, status=status, message=message, actions=list(self._wire_actions)
        )

    async def _publish(self, status: StatusType, baseline: str = "", message: str = "") -> None:
        await self._publisher.publish_feedback(
            self.activity_id, self.feedback(status, baseline, message)
        )

    def _resolve(self, baseline: str) -> BaselineState | None:
        if baseline in ALL_BASELINES:
            return self._all
        return self._baselines.get(baseline)

    def _members(self, state: BaselineState) -> list[ActionState]:
        return [self.actions[i] for i in state.indexes]

    # --- identification ----------------------------------------------------------------------

    async def publish_identified(self) -> None:
        """IDENTIFIED with all actions; ignored-entry warnings in the message (D7, D8)."""
        await self._publish(StatusType.IDENTIFIED, message="; ".join(self.plan.warnings))

    # --- commands ----------------------------------------------------------------------------

    async def command(self, command: str, baseline: str) -> None:
        """One `desiredstate/command` (§3.4), with its feedback. Unknown commands: no answer."""
        kind = self._command_type(command)
        if kind is None:
            return
        if self.finished:
            log.warning("[%s] command %s after the end: ignored", self.activity_id, kind)
            return
        rule = COMMANDS[kind]
        state = self._resolve(baseline)
        if state is None:
            # Kanto answers CLEANUP of an unknown baseline with CLEANUP (D14: the failure).
            await self._publish(rule.failure, baseline, unknown_baseline_message(baseline))
            return
        if rule.allowed is not None and state.status not in rule.allowed:
            await self._publish(rule.failure, baseline, rule.refusal)
            return
        try:
            await rule.handler(self, state, baseline)
        except OperationStopped:
            await self._end_stopped()

    def _command_type(self, command: str) -> CommandType | None:
        """The command's type; None (logged) for an unknown one, which Kanto ignores."""
        try:
            return CommandType(command)
        except ValueError:
            log.warning("[%s] unknown command %r ignored", self.activity_id, command)
            return None

    async def refuse(self, command: CommandType, message: str) -> None:
        """A command message that could not be decoded: its failure status with `message`
        (ours: Kanto drops it without an answer). Nothing changes."""
        if self.finished:
            log.warning("[%s] invalid %s after the end: ignored", self.activity_id, command)
            return
        await self._publish(COMMANDS[command].failure, "", message)

    async def reject(self, command: str, baseline: str) -> None:
        """Standalone mode: a command for the running operation gets the failure answer."""
        kind = self._command_type(command)
        if kind is None:
            return
        rule = COMMANDS[kind]
        await self._publish(rule.failure, baseline, rule.refusal)

    async def run_standalone(self) -> StatusType:
        """DOWNLOAD, UPDATE, ACTIVATE, CLEANUP on all actions; on a failure ROLLBACK first."""
        self._straight_on = True
        try:
            ok = await self._download(self._all, "")
            if ok:
                self._checkpoint()
                ok = await self._update(self._all, "")
            if ok:
                self._checkpoint()
                ok = await self._activate(self._all, "")
            self._checkpoint()
            if not ok:
                await self._rollback(self._all, "")
                self._checkpoint()
            await self._cleanup(self._all, "")
        except OperationStopped:
            await self._end_stopped()
        assert self.final_status is not None
        return self.final_status

    async def supersede(self, message: str) -> None:
        """A newer desired state replaces this one: restore the device, say SUPERSEDED (D9)."""
        for action in self.actions:
            await self._undo_quietly(action, ensure_running=False)
        await self._finish(StatusType.SUPERSEDED, message)

    async def _finish(self, status: StatusType, message: str = "") -> None:
        """The final status. Its journal records go only once the broker has it: a restart
        before that publishes it again (`journal`)."""
        self.final_status = status
        try:
            self._journal.finished(self.activity_id, status, message)
        except JournalError as exc:  # a restart would say INCOMPLETE instead
            log.error("[%s] %s", self.activity_id, exc)
        await self._publisher.publish_feedback(
            self.activity_id,
            self.feedback(status, message=message),
            on_delivered=functools.partial(self._journal.close, self.activity_id),
        )

    async def _end_stopped(self) -> None:
        """The agent stops mid-operation: what was done is reported, the end is INCOMPLETE.

        Containers in flight are put back by crash recovery at the next start (the journal
        is kept for it: the operation was interrupted, as by a crash). Once the broker has
        the INCOMPLETE, `ended` says so (not answered again after the restart).
        """
        if not self.finished:
            self.final_status = StatusType.INCOMPLETE
            message = stopped_message(self._stop_reason) if self._stop_reason else ""
            await self._publisher.publish_feedback(
                self.activity_id,
                self.feedback(StatusType.INCOMPLETE, message=message),
                on_delivered=self._ended,
            )

    def _ended(self) -> None:
        try:
            self._journal.ended(self.activity_id)  # answered: not again after restart
        except JournalError as exc:
            log.error("[%s] %s", self.activity_id, exc)

    async def undo_changes(self) -> tuple[list[str], list[str]]:
        """After a stop: put back what this operation changed, as ROLLBACK does (the old
        containers end running). Returns the names restored and the names that failed."""
        restored: list[str] = []
        failed: list[str] = []
        for action in self.actions:
            if not action.changed:
                continue
            if await self._undo_quietly(action, ensure_running=True):
                restored.append(action.name)
            else:
                failed.append(action.name)
        self._journal.close(self.activity_id)
        return restored, failed

    # --- DOWNLOAD, UPDATE, ACTIVATE (§3.4.1) -------------------------------------------------

    async def _phase(
        self,
        phase: _Phase,
        state: BaselineState,
        baseline: str,
        step: Callable[[ActionState, str], Awaitable[str]],
        early: Lookahead[ActionState, Any] | None = None,
    ) -> bool:
        """Kanto's phase loop: N in-progress messages, then one result; first error stops.

        With `early`, engine work of the next actions runs ahead of the loop (`step` waits
        for it); the feedback is the same as one action at a time."""
        relevant = [a for a in self._members(state) if a.kind in phase.kinds]
        if early is None:
            return await self._phase_loop(
                phase, state, baseline, step, relevant=relevant, early=None
            )
        async with early:
            early.start(relevant)
            return await self._phase_loop(
                phase, state, baseline, step, relevant=relevant, early=early
            )

    async def _phase_loop(
        self,
        phase: _Phase,
        state: BaselineState,
        baseline: str,
        step: Callable[[ActionState, str], Awaitable[str]],
        *,
        relevant: Sequence[ActionState],
        early: Lookahead[ActionState, Any] | None,
    ) -> bool:
        last: ActionState | None = None
        last_message = ""
        for index, action in enumerate(relevant):
            if early is not None and not self._stopping:  # no new work once stopping
                early.advance(index)
            if last is not None:
                last.status, last.message = phase.action_success, last_message
            last = action
            action.status = phase.action_running
            state.status = phase.running
            await self._publish(phase.running, baseline)
            # A turn for the other tasks (a stop request, the MQTT connection sending this
            # message): with the work done ahead, the loop need not wait for anything.
            await asyncio.sleep(0)
            try:
                self._checkpoint()
                last_message = await step(action, baseline)
            except OperationStopped:
                action.status, action.message = phase.action_failure, MSG_STOPPING
                state.status = phase.failure
                await self._publish(phase.failure, baseline)
                raise
            except Exception as error:  # every engine error ends the phase with its text
                log.warning(
                    "[%s] %s of %s failed: %s", self.activity_id, phase.running, action.name, error
                )
                action.status, action.message = phase.action_failure, str(error)
                state.status = phase.failure
                await self._publish(phase.failure, baseline)
                return False
        if last is not None:
            last.status, last.message = phase.action_success, last_message
        state.status = phase.success
        await self._publish(phase.success, baseline)
        return True

    async def _download(self, state: BaselineState, baseline: str) -> bool:
        """DOWNLOAD: all images pulled in parallel first, then Kanto's loop (with progress)."""
        images = [
            a.planned.desired.spec.image
            for a in self._members(state)
            if a.kind in _DOWNLOAD.kinds and a.planned.desired is not None
        ]

        def image_ready(action: ActionState) -> bool:
            desired = action.planned.desired
            return desired is not None and downloads.ready(desired.spec.image)

        # Creates run ahead only once their image is there: an early create never waits
        # for a pull, so a failed phase ends at once (as Kanto's). A pull that ends starts
        # the creates waiting for it (`refresh`): the last create follows the last pull.
        early: Lookahead[ActionState, None] = Lookahead(
            self._steps.create_new, self._settings.parallel_actions - 1, image_ready
        )
        async with Downloads(
            self._engine,
            images,
            always=self._settings.pull_always,
            concurrency=self._settings.download_concurrency,
            on_finished=early.refresh,
        ) as downloads:

            async def step(action: ActionState, baseline: str) -> str:
                desired = action.planned.desired
                assert desired is not None
                await self._await_image(downloads, action, desired.spec.image, baseline)
                await early.wait(action)  # the create (new container, not started)
                return MSG_CREATED

            return await self._phase(_DOWNLOAD, state, baseline, step, early)

    async def _await_image(
        self, downloads: Downloads, action: ActionState, image: str, baseline: str
    ) -> None:
        """Wait for the image; meanwhile DOWNLOADING feedback carries the action's progress,
        at most one such message per `progress_interval` for the whole operation."""
        interval = self._settings.progress_interval
        while True:
            wait = max(interval, self._last_progress + interval - time.monotonic())
            if await downloads.wait(image, wait):
                return
            self._checkpoint()
            percent = downloads.percent(image)
            if percent > 0 and time.monotonic() - self._last_progress >= interval:
                action.progress = percent
                try:
                    await self._publish(StatusType.DOWNLOADING, baseline)
                finally:
                    action.progress = 0
                self._last_progress = time.monotonic()

    async def _update(self, state: BaselineState, baseline: str) -> bool:
        return await self._phase(_UPDATE, state, baseline, self._update_step)

    async def _update_step(self, action: ActionState, baseline: str) -> str:
        if action.kind is ActionKind.UPDATE:
            await self._steps.update_runtime(action)
            return MSG_UPDATED
        if self._straight_on and action.kind is ActionKind.RECREATE and not action.host_targets:
            # ACTIVATE follows at once: its renames are done here, while the engine stops
            # the old container. (Not with `container_<hostname>` hosts: the
            # new container may be created again at its start, under its temporary name;
            # not orchestrated: the old container keeps its name until the update manager
            # says ACTIVATE.)
            await self._steps.stop_old_taking_name(action)
        else:
            await self._steps.stop_old(action)
        return MSG_STOPPED

    async def _activate(self, state: BaselineState, baseline: str) -> bool:
        """ACTIVATE. Ahead of the loop: the new containers are renamed, started (undone by
        ROLLBACK like a sequential run's) and watched until they have shown that they run
        (`activation`); the others' state is read (no change). With `parallel_actions` > 1
        every action runs ahead at once (at most that many renames+starts in flight), so
        the stability window is paid once per phase, not once per container.

        The others' state comes from one container listing, made when the first of them is
        reached (Kanto's agent asks its container manager, which answers from memory): one
        engine call instead of one per container. A listing error fails that action, as a
        failed read of its state would.

        Extra hosts `container_<hostname>` are resolved at the start (`hosts`): a dependant
        starts after the new containers it names (those without such entries themselves,
        or before it in the desired order, so that there is never a cycle)."""
        ahead = len(self.actions) if self._settings.parallel_actions > 1 else 0
        relevant = [a for a in self._members(state) if a.kind in _ACTIVATE.kinds]
        started, waits = _start_order(relevant) if ahead else ({}, {})
        statuses = self._identification_statuses()
        listing = asyncio.Lock()

        async def status_of(container_id: str) -> ContainerStatus | None:
            nonlocal statuses
            async with listing:
                if statuses is None:
                    listed = await self._engine.list_containers()
                    statuses = {c.id: c.status for c in listed}
            return statuses.get(container_id)

        slots = asyncio.Semaphore(max(1, self._settings.parallel_actions))

        async def work(action: ActionState) -> ContainerStatus | None:
            for target in waits.get(id(action), ()):
                await target.wait()
            if action.kind in (ActionKind.CREATE, ActionKind.RECREATE):
                try:
                    async with slots:
                        await self._steps.hosts_at_start(action)
                        await self._steps.activate_new(action)
                finally:
                    if id(action) in started:
                        started[id(action)].set()
                assert action.new_id is not None
                await watch_activation(
                    self._engine, action.new_id, action.name, self._watch, self._checkpoint
                )
                return None
            current = action.planned.current
            assert current is not None
            if action.host_targets:
                async with slots:
                    replaced = await self._steps.replace_for_hosts(action)
                if replaced:
                    assert action.new_id is not None
                    await watch_activation(
                        self._engine, action.new_id, action.name, self._watch, self._checkpoint
                    )
                    return ContainerStatus.RUNNING
            return await status_of(current.id)

        early: Lookahead[ActionState, ContainerStatus | None] = Lookahead(work, ahead)

        async def step(action: ActionState, baseline: str) -> str:
            return await self._activate_step(action, await early.wait(action))

        return await self._phase(_ACTIVATE, state, baseline, step, early)

    def _identification_statuses(self) -> dict[str, ContainerStatus] | None:
        """The containers' states as identification listed them, when ACTIVATE may take
        them instead of listing again: the plan changes nothing (every action is CHECK) and
        that listing began at most `LISTING_FRESH` seconds ago (a no-op in standalone mode;
        in orchestrated mode ACTIVATE comes later and lists). A container that stops in that
        time is as missed as one that stops just after a new listing would be."""
        if self._listed_at is None or time.monotonic() - self._listed_at > LISTING_FRESH:
            return None
        if any(action.kind is not ActionKind.CHECK for action in self.actions):
            return None
        return {
            action.planned.current.id: action.planned.current.status
            for action in self.actions
            if action.planned.current is not None
        }

    async def _activate_step(self, action: ActionState, status: ContainerStatus | None) -> str:
        """After the work done ahead: `status` is the container's state as listed then.
        Extra hosts left out at the start are said after Kanto's message."""
        if action.kind in (ActionKind.CREATE, ActionKind.RECREATE):
            return _with_warnings(MSG_STARTED, action)  # renamed and started ahead
        current = action.planned.current
        assert current is not None
        if not action.replaced and await self._steps.ensure_running(current.id, status):
            await watch_activation(
                self._engine, current.id, action.name, self._watch, self._checkpoint
            )
        if action.kind is ActionKind.UPDATE:
            return _with_warnings(action.message, action)  # Kanto keeps UPDATE's message
        return _with_warnings(MSG_RUNNING, action)

    # --- ROLLBACK (§3.4.2) -------------------------------------------------------------------

    async def _rollback(self, state: BaselineState, baseline: str) -> None:
        failure = False
        last: ActionState | None = None
        last_message = ""
        for action in self._members(state):
            if last is not None:
                last.status, last.message = ActionStatusType.UPDATE_FAILURE, last_message
                state.status = StatusType.ROLLBACK
                await self._publish(StatusType.ROLLBACK, baseline)
            last = action
            if action.kind in (ActionKind.UPDATE, ActionKind.CREATE, ActionKind.RECREATE):
                action.status = ActionStatusType.UPDATING
                state.status = StatusType.ROLLBACK
                await self._publish(StatusType.ROLLBACK, baseline)
                try:
                    await self._steps.undo(action, ensure_running=True)
                    last_message = {
                        ActionKind.UPDATE: MSG_ROLLBACK_UPDATE,
                        ActionKind.CREATE: MSG_ROLLBACK_CREATE,
                        ActionKind.RECREATE: MSG_ROLLBACK_RECREATE,
                    }[action.kind]
                except Exception as error:  # ROLLBACK continues past errors (Kanto)
                    log.warning("[%s] rollback of %s: %s", self.activity_id, action.name, error)
                    last_message = str(error)
                    failure = True
            else:
                last = None
                if action.changed:
                    # D5: a DESTROY container stopped by UPDATE runs again. Kanto has no
                    # feedback step here; only a failure shows, on the action itself.
                    try:
                        await self._steps.undo(action, ensure_running=True)
                    except Exception as error:
                        action.status = ActionStatusType.UPDATE_FAILURE
                        action.message = str(error)
                        failure = True
        if last is not None:
            last.status, last.message = ActionStatusType.UPDATE_FAILURE, last_message
        state.status = StatusType.ROLLBACK_FAILURE if failure else StatusType.ROLLBACK_SUCCESS
        await self._publish(state.status, baseline)

    # --- CLEANUP and completion (§3.4.3) -----------------------------------------------------

    async def _cleanup(self, state: BaselineState, baseline: str) -> None:
        if baseline in ALL_BASELINES:
            self._baselines.clear()
        else:
            self._baselines.pop(baseline, None)
        result = StatusType.CLEANUP_SUCCESS
        members = self._members(state)
        if state.status is StatusType.ACTIVATION_SUCCESS:
            try:
                self._steps.journal_commit(members)
            except JournalError as exc:
                # Only a crash before the end would matter: it would undo these changes.
                log.error("[%s] %s", self.activity_id, exc)
            for action in members:
                if action.kind not in (ActionKind.RECREATE, ActionKind.DESTROY) and not (
                    action.replaced
                ):
                    continue
                try:
                    await self._steps.remove_old(action)
                    error: Exception | None = None
                except Exception as exc:
                    error = exc
                    log.warning("[%s] cleanup of %s: %s", self.activity_id, action.name, exc)
                if (
                    action.kind is ActionKind.DESTROY
                    and action.status is ActionStatusType.UPDATE_SUCCESS
                ):
                    if error is None:
                        action.status = ActionStatusType.REMOVAL_SUCCESS
                        action.message = MSG_REMOVED
                    else:
                        action.status = ActionStatusType.REMOVAL_FAILURE
                        action.message = str(error)
                        result = StatusType.CLEANUP_FAILURE
            for action in members:
                action.commit()
        elif not await self._restore(members):
            # D3: after a failed (or never finished) phase, the device is put back as it was.
            result = StatusType.CLEANUP_FAILURE
        self._clean = (
            self._clean
            and state.status is StatusType.ACTIVATION_SUCCESS
            and result is StatusType.CLEANUP_SUCCESS
        )
        await self._publish(result, baseline)
        if not self._baselines:
            # D6: COMPLETED only if every cleaned baseline was activated and cleaned.
            await self._finish(StatusType.COMPLETED if self._clean else StatusType.INCOMPLETE)

    async def _restore(self, members: Sequence[ActionState]) -> bool:
        ok = True
        for action in members:
            ok = await self._undo_quietly(action, ensure_running=False) and ok
        return ok

    async def _undo_quietly(self, action: ActionState, *, ensure_running: bool) -> bool:
        if not action.changed:
            return True
        try:
            await asyncio.shield(self._steps.undo(action, ensure_running=ensure_running))
        except Exception as error:
            log.error("[%s] cannot restore %s: %s", self.activity_id, action.name, error)
            return False
        return True


@dataclass(frozen=True, slots=True)
class CommandRule:
    """One command of §3.4, as a row of Kanto's `baselineCommandHandlers`: the baseline
    statuses it may run in (None: any), the status that answers it when it cannot run,
    and its handler."""

    command: CommandType
    allowed: tuple[StatusType, ...] | None
    failure: StatusType
    handler: Callable[[Operation, BaselineState, str], Awaitable[object]]

    @property
    def refusal(self) -> str:
        """The failure's message when the command comes at the wrong time. A command
        allowed in any status comes at the wrong time only in standalone mode."""
        if self.allowed is None:
            return standalone_refusal_message(self.command)
        return wrong_state_message(self.command, self.allowed)


COMMANDS: dict[CommandType, CommandRule] = {
    rule.command: rule
    for rule in (
        CommandRule(
            CommandType.DOWNLOAD,
            (StatusType.IDENTIFIED,),
            StatusType.DOWNLOAD_FAILURE,
            Operation._download,
        ),
        CommandRule(
            CommandType.UPDATE,
            (StatusType.DOWNLOAD_SUCCESS,),
            StatusType.UPDATE_FAILURE,
            Operation._update,
        ),
        CommandRule(
            CommandType.ACTIVATE,
            (StatusType.UPDATE_SUCCESS,),
            StatusType.ACTIVATION_FAILURE,
            Operation._activate,
        ),
        CommandRule(
            CommandType.ROLLBACK,
            (
                StatusType.DOWNLOAD_SUCCESS,
                StatusType.UPDATE_SUCCESS,
                StatusType.ACTIVATION_FAILURE,
                StatusType.ACTIVATION_SUCCESS,
            ),
            StatusType.ROLLBACK_FAILURE,
            Operation._rollback,
        ),
        # CLEANUP runs in any status: after a failure it restores the device (D3).
        CommandRule(CommandType.CLEANUP, None, StatusType.CLEANUP_FAILURE, Operation._cleanup),
    )
}
